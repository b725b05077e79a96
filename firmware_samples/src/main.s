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

        .set    UART0_FIFO,         0x3FF40000  /* UART0 TX FIFO (write a byte to send it) */
        .set    UART_STATUS,        0x1C        /* txfifo_cnt in bits 16..23 */
        .set    RTC_WDTCONFIG0,     0x3FF4808C  /* RTC_CNTL_WDTCONFIG0_REG */
        .set    RTC_WDTWPROTECT,    0x18        /* RTC_CNTL_WDTWPROTECT_REG, from WDTCONFIG0 */
        .set    TIMG0_WDTCONFIG0,   0x3FF5F048  /* TIMG_WDTCONFIG0_REG(0) */
        .set    TIMG1_WDTCONFIG0,   0x3FF60048  /* TIMG_WDTCONFIG0_REG(1) */
        .set    TIMG_WDTWPROTECT,   0x1C        /* TIMG_WDTWPROTECT_REG, from WDTCONFIG0 */
        .set    WDT_WKEY,           0x50D83AA1  /* write-protect unlock key */

/* Send the byte in \reg on UART0 once the TX FIFO has room (a6 = UART0 base; clobbers a15). */
        .macro  uart_putc reg
1:      l32i    a15, a6, UART_STATUS
        extui   a15, a15, 16, 8
        bgeui   a15, 128, 1b
        memw
        s32i    \reg, a6, 0
        .endm

/* Unlock the watchdog whose WDTCONFIG0 is at \base, clear its configuration, lock it again. */
        .macro  wdt_off base, wprotect
        l32r    a3, \base
        memw
        s32i    a2, a3, \wprotect
        memw
        s32i    a4, a3, 0
        memw
        s32i    a4, a3, \wprotect
        .endm

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
lit_wdt_wkey:       .word WDT_WKEY
lit_rtc_wdt:        .word RTC_WDTCONFIG0
lit_timg0_wdt:      .word TIMG0_WDTCONFIG0
lit_timg1_wdt:      .word TIMG1_WDTCONFIG0
lit_uart0:          .word UART0_FIFO
lit_app_desc:       .word APP_DESC
lit_powers:         .word powers_of_ten
lit_str_secure:     .word str_secure_version
lit_str_running:    .word str_running

        .global _start
        .align  4
_start:
        l32r    a2, lit_wdt_wkey
        movi    a4, 0
        wdt_off lit_rtc_wdt, RTC_WDTWPROTECT
        wdt_off lit_timg0_wdt, TIMG_WDTWPROTECT
        wdt_off lit_timg1_wdt, TIMG_WDTWPROTECT

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

/* Send the NUL-terminated string at a2, at most a7 bytes (clobbers a2, a3, a7, a15). */
        .align  4
puts:
        l8ui    a3, a2, 0
        beqz    a3, puts_done
        uart_putc a3
        addi    a2, a2, 1
        addi    a7, a7, -1
        bnez    a7, puts
puts_done:
        ret
