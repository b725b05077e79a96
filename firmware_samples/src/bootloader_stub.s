/*
 * A stand-in for ESP-IDF's second-stage bootloader, so that a flash can be made without one (the
 * emulator decides what the bootloader would do in Python and never runs this code). It is laid out
 * like a real ESP32 bootloader: RAM segments only, the esp_bootloader_desc_t first in DRAM (image
 * offset 0x20, where esp_ota_get_bootloader_description() and esptool look for it), code in IRAM.
 *
 * If the ROM does start it (in QEMU, say), it switches off the watchdogs, says on UART0 that it is not
 * a real bootloader and idles forever: it loads no application. Base Xtensa ISA only; no stack.
 */

        .include "char_field.inc"
        .include "esp32_io.inc"

        /* esp_bootloader_desc_t, 80 bytes */
        .section .dram0.bootdesc, "a"
        .align  4
        .global esp_bootloader_desc
esp_bootloader_desc:
        .byte   0x50                    /* magic_byte (ESP_BOOTLOADER_DESC_MAGIC_BYTE) */
        .byte   0, 0, 0                 /* reserved */
        .word   1                       /* version (CONFIG_BOOTLOADER_PROJECT_VER) */
        char_field "esp-ota-emu-stub", 32 /* idf_ver */
        char_field "", 24               /* date_time: empty, as in a reproducible build */
        .space  16                      /* reserved2 */
        .if . - esp_bootloader_desc != 80
        .error "esp_bootloader_desc_t must be 80 bytes"
        .endif

        .section .dram0.rodata, "a"
str_banner:
        .asciz  "esp-ota-emu stub bootloader: not a real 2nd-stage bootloader, use mkflash --bootloader with ESP-IDF's for QEMU\r\n"
        .set    BANNER_MAX, 128
        .if . - str_banner > BANNER_MAX
        .error "the banner is longer than puts is told to send"
        .endif

        /* Loader code (ESP-IDF's bootloader keeps its loading code in this IRAM region too). */
        .section .iram_loader.text, "ax"
        puts_routine

        /* The entry point the ROM jumps to, as in ESP-IDF's bootloader. */
        .section .iram.text, "ax"
        .align  4
        watchdog_literals
lit_uart0:          .word UART0_FIFO
lit_str_banner:     .word str_banner

        .global call_start_cpu0
        .align  4
call_start_cpu0:
        disable_watchdogs
        l32r    a6, lit_uart0
        l32r    a2, lit_str_banner
        movi    a7, BANNER_MAX
        call0   puts
idle:
        j       idle
