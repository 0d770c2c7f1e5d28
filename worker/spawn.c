/* The job launcher's way to start a job's shell (worker/launcher.py loads it with ctypes).

   A fork of even a small Python process costs about 1.5 ms more CPU per job than the shell itself on
   the machines we measured (its page tables, then copy-on-write faults in both processes), as did
   util-linux's setpriv before it. vfork shares the launcher's memory until the child execs, so the
   child here only makes system calls: a new session, stdin and stdout/stderr, the directory (entered
   with the launcher's rights), the job user's groups, gid and uid, every signal back to its default
   and none blocked, then execve. The credentials are set with raw system calls: glibc's wrappers
   would tell the launcher's threads (memory the vfork child shares) to change theirs too.

   Built by setuptools as the optional extension worker._spawn (pyproject.toml); without a C compiler
   the launcher falls back to os.fork. */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

/* The step that failed, as jc_spawn reports it in *failed_step. */
enum { STEP_SESSION = 1, STEP_FDS, STEP_CWD, STEP_GROUPS, STEP_GID, STEP_UID, STEP_EXEC };

/* Start path with argv and envp as described above. uid < 0: keep the launcher's credentials.
   Returns the child's pid (it has exec'd by then), or -errno when vfork failed. When the child failed
   before its exec, *failed_errno and *failed_step say where; it has exited 127 and must be reaped. */
int jc_spawn(const char *path, char *const argv[], char *const envp[], const char *cwd, int in_fd, int out_fd,
             long uid, long gid, int ngroups, const gid_t *groups, int *failed_errno, int *failed_step)
{
    volatile int err = 0, step = 0;
    sigset_t all, none, old;
    sigfillset(&all);
    sigemptyset(&none);
    /* No signal handler of the launcher may run in the child, which shares its memory. */
    sigprocmask(SIG_SETMASK, &all, &old);
    pid_t pid = vfork();
    if (pid == 0) {
        /* The kernel's sigaction, all zero: SIG_DFL, no flags, no mask (the same bytes whatever the
           architecture orders them in). Raw, because glibc refuses its own signals (32, 33), which an
           ancestor of the worker may have left ignored; the table is the child's own (vfork does not
           share it). */
        unsigned long dfl[4] = {0, 0, 0, 0};
        for (int sig = 1; sig < NSIG; sig++) {
            if (sig != SIGKILL && sig != SIGSTOP)
                syscall(SYS_rt_sigaction, sig, dfl, 0, sizeof(unsigned long));
        }
        step = STEP_SESSION;
        if (setsid() < 0)
            goto failed;
        step = STEP_FDS;
        if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(out_fd, 2) < 0)
            goto failed;
        step = STEP_CWD;
        if (cwd && cwd[0] && chdir(cwd) < 0)
            goto failed;
        if (uid >= 0) {
            step = STEP_GROUPS;
            if (syscall(SYS_setgroups, ngroups, groups) < 0)
                goto failed;
            step = STEP_GID;
            if (syscall(SYS_setresgid, gid, gid, gid) < 0)
                goto failed;
            step = STEP_UID;
            if (syscall(SYS_setresuid, uid, uid, uid) < 0)
                goto failed;
        }
        sigprocmask(SIG_SETMASK, &none, 0);
        step = STEP_EXEC;
        execve(path, argv, envp);
    failed:
        err = errno;
        _exit(127);
    }
    int saved = errno;
    sigprocmask(SIG_SETMASK, &old, 0);
    if (pid < 0)
        return -saved;
    *failed_errno = err;
    *failed_step = err ? step : 0;
    return pid;
}
