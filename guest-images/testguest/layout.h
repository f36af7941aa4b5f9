/* Constants shared by the assembly and C parts of the test guest. */
#ifndef TG_LAYOUT_H
#define TG_LAYOUT_H

#define KERNEL_BASE     0x100000        /* fixed load address (not relocatable) */
#define MAX_CPUS        64

#define KSTACK_SHIFT    13              /* CPL 0 stack per CPU slot (TSS.RSP0) */
#define KSTACK_SIZE     (1 << KSTACK_SHIFT)
#define USTACK_SHIFT    14              /* CPL 3 stack per CPU slot */
#define USTACK_SIZE     (1 << USTACK_SHIFT)
#define TSS_SIZE        104

/* GDT selectors */
#define SEL_KCODE       0x08
#define SEL_KDATA       0x10
#define SEL_UDATA       0x18            /* used with RPL 3 */
#define SEL_UCODE       0x20            /* used with RPL 3 */
#define SEL_TSS0        0x28            /* 16-byte TSS descriptor per CPU slot */

#define RFLAGS_USER     0x3002          /* IOPL=3, IF=0 */

#define TRAMP_BASE      0x8000          /* AP real-mode trampoline (SIPI vector 0x08) */

/*
 * CPL 3 -> CPL 0 calls: int3 through a DPL 3 gate (under the PVM backend
 * "int n" raises #UD and SYSCALL stays at CPL 3; exceptions work).
 * EDI = function, ESI/EDX:EAX = arguments.
 */
#define SYS_WRMSR       0               /* wrmsr ESI, EDX:EAX */
#define SYS_PARK        1               /* halt this CPU forever (cli; hlt) */
#define SYS_DIE         2               /* force a triple fault */
#define SYS_IRQ         3               /* RFLAGS.IF of the caller (CPL 3) = ESI & 1 */

/*
 * Device interrupts (MSI-X): IRQ_NVEC vectors from IRQ_VEC_BASE, each with a
 * 3-instruction CPL 0 stub (head.S) that increments irq_count[vector -
 * IRQ_VEC_BASE] and writes the LAPIC EOI register.  The last one is used by
 * the self-IPI check (IRQ_VEC_SELFTEST).  The LAPIC spurious vector has a
 * bare iretq.
 */
#define IRQ_VEC_BASE    0x40
#define IRQ_NVEC        32
#define IRQ_VEC_SELFTEST (IRQ_VEC_BASE + IRQ_NVEC - 1)
#define IRQ_VEC_SPURIOUS 0xff
#define LAPIC_EOI_ADDR  0xfee000b0

#define CR0_PE          0x00000001
#define CR0_MP          0x00000002
#define CR0_ET          0x00000010
#define CR0_NE          0x00000020
#define CR0_PG          0x80000000
#define CR4_PAE         0x00000020
#define CR4_SMEP        0x00100000
#define CR4_SMAP        0x00200000
#define MSR_EFER        0xC0000080
#define EFER_LME        0x00000100

#endif
