/*
 * esp_app_desc_t of a sample, placed in .flash.appdesc so that elf2image puts it first in the
 * first flash-mapped data (DROM) segment, at image offset 0x20 where ESP-IDF looks for it.
 *
 * Which sample is built is chosen on the assembler command line with --defsym SAMPLE=<n>.
 */

        .include "char_field.inc"

        .macro  app_desc version, secure_version
        .word   0xABCD5432              /* magic_word (ESP_APP_DESC_MAGIC_WORD) */
        .word   \secure_version         /* secure_version */
        .word   0, 0                    /* reserv1 */
        char_field "\version", 32       /* version (PROJECT_VER) */
        char_field "esp-ota-emu-sample", 32 /* project_name */
        char_field "", 16               /* time: empty, as in a reproducible build */
        char_field "", 16               /* date: empty, as in a reproducible build */
        char_field "v5.2.1-esp-ota-emu-asm", 32 /* idf_ver */
        .space  32                      /* app_elf_sha256: zero, filled in by elf2image */
        .short  0                       /* min_efuse_blk_rev_full */
        .short  99                      /* max_efuse_blk_rev_full */
        .byte   16                      /* mmu_page_size: log2(64 KiB) */
        .byte   0, 0, 0                 /* reserv3 */
        .space  72                      /* reserv2 */
        .endm

        .section .flash.appdesc, "a"
        .align  4
        .global esp_app_desc
esp_app_desc:
        .if SAMPLE == 1
        app_desc "1.0.0", 0
        .elseif SAMPLE == 2
        app_desc "2.0.0", 0
        .elseif SAMPLE == 3
        app_desc "3.0.0", 2
        .else
        .error "SAMPLE must be 1, 2 or 3"
        .endif
        .if . - esp_app_desc != 256
        .error "esp_app_desc_t must be 256 bytes"
        .endif
