/*
 * Real-mode part of the bzImage: boot sector + setup header + a short setup
 * routine.  Used by loaders that enter the kernel in real mode (QEMU -kernel,
 * qboot): the loader puts this at SEG:0 and jumps to (SEG+0x20):0 with
 * DS = ES = SS = SEG.
 *
 * We build a boot_params ("zero page") at SEG:BP_OFF, copy the setup header
 * into it, fill the e820 table with int 0x15/E820, switch to 32-bit protected
 * mode and jump to code32_start with ESI = linear address of boot_params.
 * Everything here is emulated by KVM, so it is kept short.
 *
 * Linked at address 0 (offsets within the segment).
 */
#include "layout.h"

#define BP_OFF		0x8000		/* boot_params inside our 64 KiB segment */
#define STACK_TOP	0xe000
#define E820_MAX	128

	.code16
	.section .setup, "ax"
	.globl _start
_start:
	/* boot sector: not bootable on its own */
	.org	0x1f1
hdr:
setup_sects:	.byte	0			/* patched by mkimage.py */
root_flags:	.word	0
syssize:	.long	0			/* patched by mkimage.py */
ram_size:	.word	0
vid_mode:	.word	0xffff
root_dev:	.word	0
boot_flag:	.word	0xaa55

	/* 0x200: real-mode entry point, CS = SEG + 0x20, IP = 0 */
	.byte	0xeb, start_of_setup - 1f	/* short jmp over the header */
1:
		.ascii	"HdrS"
version:	.word	0x020c
realmode_swtch:	.long	0
start_sys_seg:	.word	0
kernel_version:	.word	kversion - 0x200
type_of_loader:	.byte	0
loadflags:	.byte	0x01			/* LOADED_HIGH */
setup_move_size: .word	0x8000
code32_start:	.long	KERNEL_BASE
ramdisk_image:	.long	0
ramdisk_size:	.long	0
bootsect_kludge: .long	0
heap_end_ptr:	.word	0
ext_loader_ver:	.byte	0
ext_loader_type: .byte	0
cmd_line_ptr:	.long	0
initrd_addr_max: .long	0x7fffffff
kernel_alignment: .long	0x100000
relocatable_kernel: .byte 0			/* must be loaded at 0x100000 */
min_alignment:	.byte	20
xloadflags:	.word	0x0001			/* XLF_KERNEL_64: 64-bit entry at +0x200 */
cmdline_size:	.long	2047
hardware_subarch: .long	0
hardware_subarch_data: .quad 0
payload_offset:	.long	0
payload_length:	.long	0
setup_data:	.quad	0
pref_address:	.quad	KERNEL_BASE
init_size:	.long	0			/* patched by mkimage.py */
handover_offset: .long	0
hdr_end:

start_of_setup:
	cli
	cld
	movw	%ds, %ax
	movw	%ax, %es
	movw	%ax, %ss
	movw	$STACK_TOP, %sp
	pushw	%ax			/* CS = DS so offsets match the link address */
	pushw	$2f
	lretw
2:
	/* zero boot_params, then copy the setup header into it */
	movw	$BP_OFF, %di
	xorl	%eax, %eax
	movw	$1024, %cx
	rep stosl
	movw	$hdr, %si
	movw	$(BP_OFF + 0x1f1), %di
	movw	$(hdr_end - hdr), %cx
	rep movsb

	/* e820 via BIOS, like Linux's detect_memory_e820() */
	xorl	%ebx, %ebx
	movw	$(BP_OFF + 0x2d0), %di
3:	movl	$0xe820, %eax
	movl	$20, %ecx
	movl	$0x534d4150, %edx	/* "SMAP" */
	int	$0x15
	jc	4f
	cmpl	$0x534d4150, %eax
	jne	4f
	addw	$20, %di
	incb	BP_OFF + 0x1e8		/* e820_entries */
	cmpb	$E820_MAX, BP_OFF + 0x1e8
	jae	4f
	testl	%ebx, %ebx
	jnz	3b
4:
	/* fast A20 (port 0x92 bit 1; never set bit 0 = reset) */
	inb	$0x92, %al
	orb	$0x02, %al
	andb	$0xfe, %al
	outb	%al, $0x92

	/* linear addresses: GDT base, boot_params (ESI), jump target */
	xorl	%esi, %esi
	movw	%ds, %si
	shll	$4, %esi
	leal	gdt(%esi), %eax
	movl	%eax, gdt_desc + 2
	addl	$BP_OFF, %esi
	movl	code32_start, %eax
	movl	%eax, pm_jump

	lgdtl	gdt_desc
	movl	%cr0, %eax
	orl	$CR0_PE, %eax
	movl	%eax, %cr0
	movw	$0x18, %ax		/* flat data, as the 32-bit boot protocol expects */
	movw	%ax, %ds
	movw	%ax, %es
	movw	%ax, %ss
	ljmpl	*%cs:pm_jump		/* CS still has the real-mode base here */

	.align	16
gdt:
	.quad	0
	.quad	0
	.quad	0x00cf9b000000ffff	/* 0x10 flat 32-bit code */
	.quad	0x00cf93000000ffff	/* 0x18 flat data */
gdt_end:
gdt_desc:
	.word	gdt_end - gdt - 1
	.long	0			/* patched: linear address of gdt */
pm_jump:
	.long	0			/* patched: code32_start */
	.word	0x10

kversion:	.asciz	"vvmm-testguest"
