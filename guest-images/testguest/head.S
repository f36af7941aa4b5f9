/*
 * Protected-mode part of the test guest: everything that must run at CPL 0.
 *
 * Under the PVM KVM backend every CPL 0 instruction is emulated (~2.5 us each),
 * so this file does the bare minimum: load the static GDT/IDT/page tables,
 * build one TSS descriptor, and iretq to CPL 3 with IOPL=3.  All tables are
 * statically initialised (or filled in later from CPL 3, which can write them
 * because every page is mapped with U/S=1).
 *
 * PVM quirks found on this host (and harmless elsewhere):
 *  - IOPL=3 from the iretq frame is not honoured at CPL 3 (user RFLAGS show
 *    IOPL=0), so every TSS also has an all-zero I/O permission bitmap; KVM's
 *    emulator checks it and port I/O from CPL 3 then works.  cli/sti at
 *    CPL 3 would #GP.
 *  - "int n" at CPL 3 raises #UD and SYSCALL does not reach CPL 0, but
 *    exceptions are delivered through the IDT, so system calls use int3
 *    (a DPL 3 #BP gate).
 *  - "int3" at CPL 0 cannot be emulated, so the forced triple fault takes
 *    its last exception at CPL 3.
 */
#include "layout.h"

/* ------------------------------------------------------------------------ */
	.section .head, "ax"

/*
 * 32-bit entry (code32_start = 0x100000), reached from our real-mode setup
 * code (QEMU -kernel path) or any 32-bit boot-protocol loader.
 * ESI = boot_params, flat 4 GiB CS/DS, paging off, interrupts off.
 */
	.code32
	.globl startup_32
startup_32:
	cli
	lgdt	gdt_desc		/* first 6 bytes: limit + low 32 bits of base */
	movl	$SEL_KDATA, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %ss
	movl	%cr4, %eax
	orl	$CR4_PAE, %eax
	movl	%eax, %cr4
	movl	$pml4, %eax
	movl	%eax, %cr3
	movl	$MSR_EFER, %ecx
	rdmsr
	orl	$EFER_LME, %eax
	wrmsr
	movl	%cr0, %eax
	orl	$(CR0_PG | CR0_PE), %eax
	movl	%eax, %cr0
	ljmp	$SEL_KCODE, $startup_64

/*
 * 64-bit entry at load address + 0x200 (like Linux startup_64).
 * RSI = boot_params; the loader's identity map covers us; interrupts off.
 */
	.org	0x200
	.code64
	.globl startup_64
startup_64:
	cli
	movq	%rsi, boot_params_phys
	lgdt	gdt_desc
	movl	$pml4, %eax
	movq	%rax, %cr3		/* our identity map: 0..4 GiB, U/S=1 */
	movq	%cr4, %rax		/* CPL 0 code runs on U/S pages: no SMEP/SMAP */
	andq	$~(CR4_SMEP | CR4_SMAP), %rax
	movq	%rax, %cr4
	movl	$SEL_KDATA, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %ss
	pushq	$SEL_KCODE		/* reload CS from our GDT */
	pushq	$1f
	lretq
1:	xorl	%edi, %edi		/* BSP = CPU slot 0 */
	/* fall through */

/*
 * Common CPL 0 -> CPL 3 path for the BSP and the APs.  EDI = CPU slot.
 * Sets up this slot's kernel stack and TSS descriptor, then iretq to
 * user_entry on the slot's user stack with IOPL=3, IF=0, RDI = slot.
 */
cpu_enter_user:
	lidt	idt_desc
	movl	%edi, %eax
	shll	$KSTACK_SHIFT, %eax
	leaq	kstacks + KSTACK_SIZE(%rax), %rsp
	/* TSS descriptor (16 bytes) for tss_array[slot]; base < 4 GiB */
	imull	$TSS_SIZE, %edi, %eax
	movl	$(MAX_CPUS * TSS_SIZE + 8192), %r8d
	subl	%eax, %r8d		/* limit: up to the end of the shared I/O bitmap */
	addl	$tss_array, %eax	/* rax = base */
	movq	%rax, %rdx
	shlq	$16, %rdx
	movabsq	$0x000000ffffff0000, %rcx
	andq	%rcx, %rdx		/* base[23:0] -> bits 16..39 */
	movq	%rax, %rcx
	shrq	$24, %rcx
	shlq	$56, %rcx
	orq	%rcx, %rdx		/* base[31:24] -> bits 56..63 */
	movabsq	$0x0000890000000000, %rcx
	orq	%rcx, %rdx		/* present, type 9 (available 64-bit TSS) */
	orq	%r8, %rdx
	movl	%edi, %ecx
	shll	$4, %ecx
	movq	%rdx, gdt_tss(%rcx)	/* high half stays 0 (base[63:32]) */
	addl	$SEL_TSS0, %ecx
	ltr	%cx
	/* user stack for this slot */
	movl	%edi, %eax
	shll	$USTACK_SHIFT, %eax
	addq	$(ustacks + USTACK_SIZE), %rax
	pushq	$(SEL_UDATA | 3)
	pushq	%rax
	pushq	$RFLAGS_USER
	pushq	$(SEL_UCODE | 3)
	pushq	$user_entry
	iretq

/*
 * 64-bit AP entry, reached from the real-mode trampoline.  Takes the next
 * free CPU slot; which logical CPU index it is gets decided at CPL 3 from
 * the APIC ID.
 */
	.globl ap_start64
ap_start64:
	movl	$SEL_KDATA, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %ss
	movl	$1, %edi
	lock xaddl %edi, ap_next_slot
	cmpl	$MAX_CPUS, %edi
	jb	cpu_enter_user
1:	hlt				/* more CPUs than slots: park */
	jmp	1b

/* ------------------------------------------------------------------------ */
/* CPL 0 interrupt/exception entry points */
	.text
	.code64

/* exception stubs 0..31, 16 bytes each: push error code (0 if the CPU
 * does not push one), push vector, jump to the common handler */
	.align	16
	.globl exc_stubs
exc_stubs:
	.set	vec, 0
	.rept	32
	.align	16
	.if !(vec == 8 || (vec >= 10 && vec <= 14) || vec == 17 || vec == 21 || vec == 29 || vec == 30)
	pushq	$0
	.endif
	pushq	$vec
	jmp	exc_common
	.set	vec, vec + 1
	.endr

exc_common:
	movq	%rsp, %rdi		/* struct exc_frame * */
	andq	$~15, %rsp
	call	exc_handler		/* prints "tg: panic ...", does not return */
	jmp	triple_fault

/*
 * Device interrupt stubs (MSI-X vectors IRQ_VEC_BASE + i), 32 bytes apart.
 * Every CPL 0 instruction is emulated under PVM, so each is three
 * instructions and touches no register: count (irq_count[i], read by CPL 3),
 * EOI (the xAPIC ignores the value written; moffs64 form of mov, so no
 * register is needed for the address), return.  incl may change the flags,
 * iretq restores them.
 */
	.align	32
	.globl irq_stubs
irq_stubs:
	.set	i, 0
	.rept	IRQ_NVEC
	.align	32
	incl	irq_count + 4 * i(%rip)
	movabsl	%eax, LAPIC_EOI_ADDR
	iretq
	.set	i, i + 1
	.endr

/* LAPIC spurious-interrupt vector: no EOI */
	.globl irq_spurious
irq_spurious:
	iretq

/*
 * System call entry (CPL 0) through the DPL 3 #BP gate: CPL 3 executes int3.
 * EDI = function (SYS_*), ESI / EDX:EAX = arguments.  The gate is an
 * interrupt gate, so device interrupts stay off in here.
 */
	.globl sys_entry
sys_entry:
	cmpl	$SYS_WRMSR, %edi
	jne	1f
	movl	%esi, %ecx
	wrmsr
	iretq
1:	cmpl	$SYS_IRQ, %edi
	jne	2f
	testl	$1, %esi
	jz	3f
	orq	$0x200, 16(%rsp)	/* RFLAGS.IF in the iretq frame */
	iretq
3:	andq	$~0x200, 16(%rsp)
	iretq
2:	cmpl	$SYS_PARK, %edi
	jne	triple_fault
park:
	cli
	hlt
	jmp	park

/*
 * SYS_DIE, or jumped to from CPL 0: force a triple fault so the
 * VMM sees a shutdown, not a clean reboot.  Under PVM an "int3" at CPL 0
 * cannot be emulated (KVM's emulator lacks protected-mode INT n), so load an
 * empty IDT and take the exception natively at CPL 3 instead.
 */
triple_fault:
	lidt	null_idt_desc
	pushq	$(SEL_UDATA | 3)
	pushq	$0
	pushq	$RFLAGS_USER
	pushq	$(SEL_UCODE | 3)
	pushq	$1f
	iretq
1:	ud2				/* CPL 3: #UD -> no IDT -> #DF -> shutdown */
	jmp	1b

/* CPL 3 entry point for every CPU: RDI = slot */
user_entry:
	testl	%edi, %edi
	jnz	1f
	/* BSP: zero .bss here, natively, rather than at (emulated) CPL 0 */
	movl	$__bss_start, %edi
	movl	$__bss_end, %ecx
	subl	%edi, %ecx
	xorl	%eax, %eax
	rep stosb
	xorl	%edi, %edi
	call	bsp_main
	ud2
1:	call	ap_main
	ud2

/* ------------------------------------------------------------------------ */
/*
 * AP trampoline, copied to TRAMP_BASE (below 1 MiB) by the BSP.  Runs in
 * real mode with CS = TRAMP_BASE >> 4, IP = 0.  Goes straight from real mode
 * to long mode (PAE + LME, then PE and PG together) to keep it short.
 */
	.section .rodata
	.align	16
	.globl ap_tramp, ap_tramp_end
	.code16
ap_tramp:
	cli
	movw	%cs, %ax
	movw	%ax, %ds
	lgdtl	tr_gdt_desc - ap_tramp
	movl	$CR4_PAE, %eax
	movl	%eax, %cr4
	movl	$pml4, %eax
	movl	%eax, %cr3
	movl	$MSR_EFER, %ecx
	rdmsr
	orl	$EFER_LME, %eax
	wrmsr
	movl	$(CR0_PG | CR0_NE | CR0_ET | CR0_MP | CR0_PE), %eax
	movl	%eax, %cr0		/* also clears CD/NW left by INIT */
	ljmpl	$SEL_KCODE, $ap_start64
	.align	4
tr_gdt_desc:
	.word	gdt_end - gdt - 1
	.long	gdt
ap_tramp_end:
	.code64

/* ------------------------------------------------------------------------ */
	.section .data.pagetables, "aw"
	.align	4096
/*
 * Identity map of 0..4 GiB with 2 MiB pages, all U/S=1 so CPL 3 can touch
 * everything (including these tables).  3..4 GiB (PCI hole, IOAPIC, LAPIC)
 * is uncached (PCD|PWT).  PDPT[4..511] are filled from CPL 3 when there is
 * RAM above 4 GiB.
 */
	.globl pml4, pdpt
pml4:
	.quad	pdpt + 0x7
	.fill	511, 8, 0
pdpt:
	.quad	pd + 0x0000 + 0x7
	.quad	pd + 0x1000 + 0x7
	.quad	pd + 0x2000 + 0x7
	.quad	pd + 0x3000 + 0x7
	.fill	508, 8, 0
pd:
	.set	addr, 0
	.rept	1536
	.quad	addr + 0x87		/* P RW US PS */
	.set	addr, addr + 0x200000
	.endr
	.rept	512
	.quad	addr + 0x9f		/* P RW US PWT PCD PS */
	.set	addr, addr + 0x200000
	.endr

	.data
	.align	16
/* Descriptors have the accessed bit preset so the CPU never writes them. */
	.globl gdt, gdt_tss
gdt:
	.quad	0
	.quad	0x00209b0000000000	/* 0x08 kernel code, 64-bit */
	.quad	0x00cf93000000ffff	/* 0x10 kernel data (flat, also ok in 32-bit mode) */
	.quad	0x00cff3000000ffff	/* 0x18 user data */
	.quad	0x0020fb0000000000	/* 0x20 user code, 64-bit */
gdt_tss:
	.fill	2 * MAX_CPUS, 8, 0	/* 0x28 + 16*slot: TSS descriptors */
gdt_end:

	.align	8
gdt_desc:				/* 10 bytes; 32-bit lgdt uses the first 6 */
	.word	gdt_end - gdt - 1
	.quad	gdt
	.align	8
idt_desc:
	.word	256 * 16 - 1
	.quad	idt
	.align	8
null_idt_desc:
	.word	0
	.quad	0

	.align	8
	.globl boot_params_phys, ap_next_slot
boot_params_phys:
	.quad	0
ap_next_slot:
	.long	1			/* slot 0 is the BSP */

/* 64-bit TSS per CPU slot; RSP0 = top of the slot's kernel stack */
	.align	16
	.globl tss_array
tss_array:
	.set	i, 0
	.rept	MAX_CPUS
	.long	0
	.quad	kstacks + (i + 1) * KSTACK_SIZE	/* rsp0 */
	.quad	0, 0, 0				/* rsp1, rsp2, reserved */
	.fill	7, 8, 0				/* ist1..7 */
	.quad	0
	.word	0
	.word	(MAX_CPUS - i) * TSS_SIZE	/* I/O bitmap offset: io_bitmap */
	.set	i, i + 1
	.endr
/* I/O permission bitmap shared by all TSSes (each TSS's limit reaches its
 * end): every port allowed, plus the mandatory 0xff terminator byte. */
io_bitmap:
	.fill	8192, 1, 0
	.byte	0xff

/* ------------------------------------------------------------------------ */
	.bss
	.align	4096
	.globl idt
idt:					/* filled from CPL 3 by idt_init() */
	.fill	256 * 16, 1, 0

/* Stacks are not zeroed (NOLOAD section after .bss). */
	.section .stacks, "aw", @nobits
	.align	4096
	.globl kstacks, ustacks
kstacks:
	.fill	MAX_CPUS * KSTACK_SIZE, 1, 0
ustacks:
	.fill	MAX_CPUS * USTACK_SIZE, 1, 0
