/* rt_shim_proto.h — what libadruntime and agentd-shim agree on: the fds the
 * shim is started with, the files it writes and the control commands. */
#ifndef AGENTD_RT_SHIM_PROTO_H
#define AGENTD_RT_SHIM_PROTO_H

/* Fds the shim finds open at exec. */
enum {
	RT_SHIM_FD_SYNC = 3,  /* SOCK_SEQPACKET to the creator: one rt_shim_msg, then closed */
	RT_SHIM_FD_CTL = 4,   /* listening control socket (ctl.sock in the state dir) */
	RT_SHIM_FD_START = 5, /* write end of the init's start pipe */
	RT_SHIM_FD_OUT = 6,   /* container stdout (or the pty master), -1 if absent */
	RT_SHIM_FD_ERR = 7,   /* container stderr, -1 if absent */
	RT_SHIM_FD_STATE = 8, /* the state dir */
	RT_SHIM_FD_IN = 9,    /* write end of the container's stdin pipe, -1 if absent */
	_RT_SHIM_FD_MAX,
};

/* argv: agentd-shim <init-pid> <log-path or ""> <tty 0|1> <stdin_once 0|1> */

/* Sync messages: SOCK_SEQPACKET between the setup children (then the shim)
 * and the creator. */
enum { RT_MSG_SHIM_PID = 1, RT_MSG_INIT_PID, RT_MSG_READY, RT_MSG_ERROR, RT_SHIM_MSG_READY };

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
 *   start            let the init exec
 *   status           "ok created|running <started_at_ns>"
 *   attach           "ok", then the connection carries framed output one way
 *                    (see rt_attach) and raw stdin the other
 *   kill SIG         signal the init (the library uses a pidfd instead)
 *   reopen           reopen the log file
 *   resize R C       set the pty window size
 * The exit file holds key=value lines: init_pid, init_start, status (raw wait
 * status), exit_code, signal, started_at, finished_at (CLOCK_REALTIME ns). */

#endif
