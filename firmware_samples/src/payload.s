/*
 * The sample's read-only payload: 64 KiB of table data in flash-mapped DROM, after the app
 * descriptor and the strings, so that the image is the size of a small real application and the
 * versions differ all through their flash sectors. The program never reads it.
 *
 * Word i (0 <= i < 16384, little-endian) is (i * 0x9E3779B1 + SAMPLE * 0x7F4A7C15) mod 2**32,
 * SAMPLE being the version number given with --defsym SAMPLE=<n>.
 */

        .set    PAYLOAD_WORDS, 16384

        .section .flash.payload, "a"
        .align  4
        .global sample_payload
sample_payload:
        .set    .Li, 0
        .rept   PAYLOAD_WORDS
        .word   (.Li * 0x9E3779B1 + SAMPLE * 0x7F4A7C15) & 0xFFFFFFFF
        .set    .Li, .Li + 1
        .endr
