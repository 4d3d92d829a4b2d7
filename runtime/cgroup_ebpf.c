/* cgroup_ebpf.c — cgroup v2 device control: v2 has no devices.allow, so the
 * allowlist becomes a BPF_PROG_TYPE_CGROUP_DEVICE program attached to the
 * cgroup directory. Whatever the rules do not allow is denied, as after
 * v1's devices.deny "a". */
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cgroup_internal.h"

#define CG_BPF_MAX_RULES 512
#define CG_BPF_MAX_ATTACHED 64

typedef struct cg_dev_rule {
	char type;	      /* 'a', 'b' or 'c' */
	int64_t major, minor; /* -1: any */
	unsigned access;      /* BPF_DEVCG_ACC_* */
} cg_dev_rule;

/* The rule was already checked by cg_validate_device_rule. */
static void cg_parse_rule(const char *s, cg_dev_rule *r)
{
	*r =
	    (cg_dev_rule){.type = 'a',
			  .major = -1,
			  .minor = -1,
			  .access = BPF_DEVCG_ACC_MKNOD | BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE};
	if (strcmp(s, "a") == 0)
		return;
	r->type = s[0];
	const char *p = s + 2;
	r->major = *p == '*' ? -1 : strtoll(p, NULL, 10);
	p = strchr(p, ':') + 1;
	r->minor = *p == '*' ? -1 : strtoll(p, NULL, 10);
	p = strchr(p, ' ') + 1;
	r->access = 0;
	for (; *p; p++)
		r->access |= *p == 'r'	 ? BPF_DEVCG_ACC_READ
			     : *p == 'w' ? BPF_DEVCG_ACC_WRITE
					 : BPF_DEVCG_ACC_MKNOD;
}

static struct bpf_insn insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm)
{
	return (struct bpf_insn){
	    .code = code, .dst_reg = dst, .src_reg = src, .off = off, .imm = imm};
}

#define LDX_W(dst, off) insn(BPF_LDX | BPF_W | BPF_MEM, (dst), BPF_REG_1, (off), 0)
#define ALU32_IMM(op, dst, imm) insn(BPF_ALU | (op) | BPF_K, (dst), 0, 0, (imm))
#define MOV64_REG(dst, src) insn(BPF_ALU64 | BPF_MOV | BPF_X, (dst), (src), 0, 0)
#define MOV64_IMM(dst, imm) insn(BPF_ALU64 | BPF_MOV | BPF_K, (dst), 0, 0, (imm))
#define JNE32_IMM(dst, imm, off) insn(BPF_JMP32 | BPF_JNE | BPF_K, (dst), 0, (off), (imm))
#define EXIT() insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)

/* r2 = device type, r3 = requested access, r4 = major, r5 = minor; then one
 * block per rule that falls through to "allow" or jumps to the next block. */
static size_t cg_bpf_build(const cg_dev_rule *rules, size_t n, struct bpf_insn *out)
{
	size_t k = 0;
	out[k++] = LDX_W(BPF_REG_2, offsetof(struct bpf_cgroup_dev_ctx, access_type));
	out[k++] = ALU32_IMM(BPF_AND, BPF_REG_2, 0xFFFF);
	out[k++] = LDX_W(BPF_REG_3, offsetof(struct bpf_cgroup_dev_ctx, access_type));
	out[k++] = ALU32_IMM(BPF_RSH, BPF_REG_3, 16);
	out[k++] = LDX_W(BPF_REG_4, offsetof(struct bpf_cgroup_dev_ctx, major));
	out[k++] = LDX_W(BPF_REG_5, offsetof(struct bpf_cgroup_dev_ctx, minor));
	const unsigned all = BPF_DEVCG_ACC_MKNOD | BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE;
	for (size_t i = 0; i < n; i++) {
		const cg_dev_rule *r = &rules[i];
		/* Jumps are emitted with off 0 and patched to the block's end. */
		size_t jumps[4], nj = 0;
		if (r->type != 'a') {
			jumps[nj++] = k;
			out[k++] =
			    JNE32_IMM(BPF_REG_2,
				      r->type == 'b' ? BPF_DEVCG_DEV_BLOCK : BPF_DEVCG_DEV_CHAR, 0);
		}
		if ((r->access & all) != all) {
			/* Any requested bit outside the rule's access: no match. */
			out[k++] = MOV64_REG(BPF_REG_1, BPF_REG_3);
			out[k++] = ALU32_IMM(BPF_AND, BPF_REG_1, (int32_t)(~r->access & all));
			jumps[nj++] = k;
			out[k++] = JNE32_IMM(BPF_REG_1, 0, 0);
		}
		if (r->major >= 0) {
			jumps[nj++] = k;
			out[k++] = JNE32_IMM(BPF_REG_4, (int32_t)r->major, 0);
		}
		if (r->minor >= 0) {
			jumps[nj++] = k;
			out[k++] = JNE32_IMM(BPF_REG_5, (int32_t)r->minor, 0);
		}
		out[k++] = MOV64_IMM(BPF_REG_0, 1);
		out[k++] = EXIT();
		/* An unconditional allow ends the program: the verifier rejects
		 * unreachable instructions. */
		if (nj == 0)
			return k;
		for (size_t j = 0; j < nj; j++)
			out[jumps[j]].off = (int16_t)(k - jumps[j] - 1);
	}
	out[k++] = MOV64_IMM(BPF_REG_0, 0);
	out[k++] = EXIT();
	return k;
}

static int sys_bpf(int cmd, union bpf_attr *attr)
{
	return (int)syscall(SYS_bpf, cmd, attr, sizeof(*attr));
}

static int cg_bpf_load(const struct bpf_insn *insns, size_t n, ad_error **err)
{
	_cleanup_free_ char *log = ad_malloc0(4096);
	union bpf_attr attr;
	memset(&attr, 0, sizeof(attr));
	attr.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
	attr.insns = (uint64_t)(uintptr_t)insns;
	attr.insn_cnt = (uint32_t)n;
	attr.license = (uint64_t)(uintptr_t) "GPL";
	int fd = sys_bpf(BPF_PROG_LOAD, &attr);
	if (fd >= 0)
		return fd;
	int e = errno;
	/* Retry with the verifier's log for a useful message. */
	memset(&attr, 0, sizeof(attr));
	attr.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
	attr.insns = (uint64_t)(uintptr_t)insns;
	attr.insn_cnt = (uint32_t)n;
	attr.license = (uint64_t)(uintptr_t) "GPL";
	attr.log_buf = (uint64_t)(uintptr_t)log;
	attr.log_size = 4096;
	attr.log_level = 1;
	log[0] = '\0';
	fd = sys_bpf(BPF_PROG_LOAD, &attr);
	if (fd >= 0)
		return fd;
	log[4095] = '\0';
	char *nl = strchr(log, '\n');
	if (nl)
		*nl = '\0';
	return ad_error_make(err, e == EPERM ? AD_E_PERMISSION : AD_E_INTERNAL, e,
			     "load device program (%zu instructions)%s%s", n, *log ? ": " : "",
			     log);
}

int cg_bpf_devices_apply(const char *dir, char *const *rules, size_t n_rules, ad_error **err)
{
	if (n_rules > CG_BPF_MAX_RULES)
		return ad_fail(err, AD_E_RESOURCE, "more than %d device rules", CG_BPF_MAX_RULES);
	_cleanup_free_ cg_dev_rule *parsed = ad_malloc0((n_rules + 1) * sizeof(*parsed));
	for (size_t i = 0; i < n_rules; i++)
		cg_parse_rule(rules[i], &parsed[i]);
	/* 6 prologue + at most 9 per rule + 2 epilogue. */
	_cleanup_free_ struct bpf_insn *insns = ad_malloc0((8 + 9 * n_rules) * sizeof(*insns));
	size_t n = cg_bpf_build(parsed, n_rules, insns);

	_cleanup_close_ int cgfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cgfd < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "open %s", dir);
	_cleanup_close_ int prog = cg_bpf_load(insns, n, err);
	if (prog < 0)
		return -1;

	/* Programs attached before (an earlier rule set, possibly by an agentd
	 * that has since restarted) are replaced: query them first, attach the
	 * new one alongside, then detach the old, so there is never a moment
	 * without a program. */
	uint32_t ids[CG_BPF_MAX_ATTACHED];
	union bpf_attr q;
	memset(&q, 0, sizeof(q));
	q.query.target_fd = (uint32_t)cgfd;
	q.query.attach_type = BPF_CGROUP_DEVICE;
	q.query.prog_ids = (uint64_t)(uintptr_t)ids;
	q.query.prog_cnt = CG_BPF_MAX_ATTACHED;
	if (sys_bpf(BPF_PROG_QUERY, &q) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "query device programs of %s", dir);
	uint32_t n_old = q.query.prog_cnt;

	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	a.target_fd = (uint32_t)cgfd;
	a.attach_bpf_fd = (uint32_t)prog;
	a.attach_type = BPF_CGROUP_DEVICE;
	a.attach_flags = BPF_F_ALLOW_MULTI;
	if (sys_bpf(BPF_PROG_ATTACH, &a) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "attach device program to %s", dir);

	for (uint32_t i = 0; i < n_old && i < CG_BPF_MAX_ATTACHED; i++) {
		union bpf_attr g;
		memset(&g, 0, sizeof(g));
		g.prog_id = ids[i];
		_cleanup_close_ int old = sys_bpf(BPF_PROG_GET_FD_BY_ID, &g);
		if (old < 0) {
			if (errno == ENOENT)
				continue;
			return ad_fail_errno(err, AD_E_INTERNAL, "device program %u", ids[i]);
		}
		union bpf_attr d;
		memset(&d, 0, sizeof(d));
		d.target_fd = (uint32_t)cgfd;
		d.attach_bpf_fd = (uint32_t)old;
		d.attach_type = BPF_CGROUP_DEVICE;
		if (sys_bpf(BPF_PROG_DETACH, &d) < 0 && errno != ENOENT)
			return ad_fail_errno(err, AD_E_INTERNAL, "detach device program %u from %s",
					     ids[i], dir);
	}
	return 0;
}
