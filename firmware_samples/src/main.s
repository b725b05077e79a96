/*
 * A minimal ESP32 application, base Xtensa ISA only (assembled with binutils-xtensa-lx106).
 *
 * Runs from flash (IROM) after an ESP-IDF second-stage bootloader jumps to the image entry
 * point: switches off the RTC and both timer-group watchdogs, prints
 *     "<project_name> <version> secure_version=<n> running\r\n"
 * on UART0, reading the three values from its own esp_app_desc_t in DROM, then idles forever.
 * No stack is used; the only subroutine is called with call0.
 */

        .set    APP_DESC,           0x3F400020  /* esp_app_desc_t: start of the DROM mapping */
        .set    DESC_SECURE_VERSION, 4
        .set    DESC_VERSION,       16
        .set    DESC_PROJECT_NAME,  48

        .include "esp32_io.inc"

        .section .flash.rodata, "a"
        .align  4
powers_of_ten:
        .word   1000000000, 100000000, 10000000, 1000000, 100000
        .word   10000, 1000, 100, 10, 1
str_secure_version:
        .asciz  " secure_version="
str_running:
        .asciz  " running\r\n"
        .align  4

        .section .flash.text, "ax"
        .align  4
        watchdog_literals
lit_uart0:          .word UART0_FIFO
lit_app_desc:       .word APP_DESC
lit_powers:         .word powers_of_ten
lit_str_secure:     .word str_secure_version
lit_str_running:    .word str_running

        .global _start
        .align  4
_start:
        disable_watchdogs

        l32r    a6, lit_uart0
        l32r    a8, lit_app_desc

        addi    a2, a8, DESC_PROJECT_NAME
        movi    a7, 32
        call0   puts
        movi    a3, ' '
        uart_putc a3
        addi    a2, a8, DESC_VERSION
        movi    a7, 32
        call0   puts
        l32r    a2, lit_str_secure
        movi    a7, 32
        call0   puts

        /* secure_version in decimal, without leading zeros */
        l32i    a9, a8, DESC_SECURE_VERSION
        l32r    a10, lit_powers
        movi    a11, 10                 /* digits left */
        movi    a12, 0                  /* a digit has been printed */
next_digit:
        l32i    a13, a10, 0
        movi    a3, '0'
count_down:
        bltu    a9, a13, digit_done
        sub     a9, a9, a13
        addi    a3, a3, 1
        j       count_down
digit_done:
        bnez    a12, emit_digit
        movi    a14, '0'
        bne     a3, a14, emit_digit
        bnei    a11, 1, skip_digit      /* always print the units digit */
emit_digit:
        movi    a12, 1
        uart_putc a3
skip_digit:
        addi    a10, a10, 4
        addi    a11, a11, -1
        bnez    a11, next_digit

        l32r    a2, lit_str_running
        movi    a7, 32
        call0   puts
idle:
        j       idle

        puts_routine
