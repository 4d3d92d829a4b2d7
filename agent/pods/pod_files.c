/* The files agentd writes for each pod and its containers mount:
 * hostname, hosts, resolv.conf (from the pod's DNS config, or the node's). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>

#include "pods_int.h"

static int write_text(const char *dir, const char *name, const char *text, ad_error **err)
{
	_cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "open %s", dir);
	return ad_write_file_atomic(fd, name, text, strlen(text), 0644, err);
}

static size_t strv_len(const char *const *v)
{
	size_t n = 0;
	while (v && v[n])
		n++;
	return n;
}

int mgr_pod_write_files(const mgr_pod *p, const mgr_pod_spec *spec, const char *ip, ad_error **err)
{
	const char *hn = p->hostname && *p->hostname ? p->hostname : p->name;
	_cleanup_free_ char *hostname = ad_asprintf("%s\n", hn);
	if (write_text(p->dir, "hostname", hostname, err) < 0)
		return -1;
	_cleanup_free_ char *hosts =
	    ad_asprintf("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n%s%s%s%s",
			ip ? ip : "", ip ? "\t" : "", ip ? hn : "", ip ? "\n" : "");
	if (write_text(p->dir, "hosts", hosts, err) < 0)
		return -1;

	_cleanup_free_ char *resolv = NULL;
	size_t n_servers = strv_len(spec->dns_servers), n_searches = strv_len(spec->dns_searches);
	size_t n_options = strv_len(spec->dns_options);
	if (n_servers || n_searches || n_options) {
		size_t len = 0;
		_cleanup_fclose_ FILE *f = NULL;
		char *buf = NULL;
		f = open_memstream(&buf, &len);
		if (!f)
			return ad_fail_errno(err, AD_E_INTERNAL, "open_memstream");
		for (size_t i = 0; i < n_servers; i++)
			fprintf(f, "nameserver %s\n", spec->dns_servers[i]);
		if (n_searches) {
			fputs("search", f);
			for (size_t i = 0; i < n_searches; i++)
				fprintf(f, " %s", spec->dns_searches[i]);
			fputc('\n', f);
		}
		if (n_options) {
			fputs("options", f);
			for (size_t i = 0; i < n_options; i++)
				fprintf(f, " %s", spec->dns_options[i]);
			fputc('\n', f);
		}
		fclose(f);
		f = NULL;
		resolv = buf;
	} else {
		/* No DNSConfig: the node's resolver, as containerd does. */
		size_t n;
		_cleanup_error_ ad_error *e = NULL;
		if (ad_read_file(AT_FDCWD, "/etc/resolv.conf", 1 << 20, &resolv, &n, &e) < 0)
			resolv = ad_strdup("");
	}
	return write_text(p->dir, "resolv.conf", resolv, err);
}
