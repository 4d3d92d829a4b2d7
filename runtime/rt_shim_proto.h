/* rt_shim_proto.h — what libadruntime and agentd-shim agree on: the fds the
 * shim is started with, the files it writes and the control commands. */
#ifndef AGENTD_RT_SHIM_PROTO_H
#define AGENTD_RT_SHIM_PROTO_H

/* Fds of the shim once the container is set up. */
enum {
	RT_SHIM_FD_SYNC = 3,  /* SOCK_SEQPACKET to the creator: one rt_shim_msg, then closed */
	RT_SHIM_FD_CTL = 4,   /* listening control socket (ctl.sock in the state dir) */
	RT_SHIM_FD_START = 5, /* the shim's end of the init's start socket */
	RT_SHIM_FD_OUT = 6,   /* container stdout (or the pty master), -1 if absent */
	RT_SHIM_FD_ERR = 7,   /* container stderr, -1 if absent */
	RT_SHIM_FD_STATE = 8, /* the state dir */
	RT_SHIM_FD_IN = 9,    /* write end of the container's stdin pipe, -1 if absent */
	_RT_SHIM_FD_MAX,
	/* At spawn only: the container's cgroup.procs files (one per hierarchy),
	 * opened by the library, for the shim to move the init in. */
	RT_SHIM_FD_CGROUP = _RT_SHIM_FD_MAX,
};
#define RT_SHIM_MAX_CGROUP_FDS 16
#define RT_SHIM_MAX_NS_FDS 8

/* Spawned by rt_create with no arguments and RT_SHIM_FD_SYNC, _CTL, _STATE
 * and _CGROUP.. open (stderr: the creator's, for warnings during setup); it
 * receives the container's config as the first message on the sync socket
 * (rt_pack.c) and creates the container itself (rt_init.c).
 * Spawned by rt_exec as `agentd-shim exec` with the process's stdio at 0-2,
 * RT_SHIM_FD_SYNC, and from RT_SHIM_FD_CGROUP on the cgroup.procs fds then
 * the namespace fds; EOF on the sync socket without a message means the
 * process was exec'd, and the spawned pid exits with its status. */

/* Sync messages: SOCK_SEQPACKET between the setup children (then the shim)
 * and the creator. */
enum { RT_MSG_INIT_PID = 1, RT_MSG_READY, RT_MSG_ERROR, RT_SHIM_MSG_READY };

/* One message on a sync socket (fixed size: SOCK_SEQPACKET keeps it whole). */
typedef struct rt_msg {
	int type;
	int code;
	int errno_value;
	int pid;
	char text[1024];
} rt_msg;

/* Files in the state dir. */
#define RT_FILE_STATE "state" /* written by the library at create */
#define RT_FILE_EXIT "exit"   /* written by the shim when the init exits */
#define RT_FILE_CTL "ctl.sock"

/* Control socket: one request line, one reply line ("ok ..." or "error ...").
 *   start            let the init exec; once it has: "ok <started_at_ns>"
 *   status           "ok created|running <started_at_ns>"
 *   attach           "ok", then the connection carries framed output one way
 *                    (see rt_attach) and raw stdin the other
 *   attach-output    the same without stdin: what it sends is dropped and its
 *                    end is not the container's EOF (stdin_once)
 *   kill SIG         signal the init (the library uses a pidfd instead)
 *   reopen           reopen the log file
 *   resize R C       set the pty window size
 * The exit file holds key=value lines: init_pid, init_start, status (raw wait
 * status), exit_code, signal, started_at, finished_at (CLOCK_REALTIME ns). */

#endif
