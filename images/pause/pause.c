/* The sandbox ("pause") process of every pod on the dev node: it holds the pod's namespaces
 * open and does nothing else. Our own, so the node needs no registry: built static by
 * provisioner/devcluster/images.py and imported as registry.k8s.io/pause:3.10.2.
 *
 * SIGINT/SIGTERM end it at once (the kubelet stops a sandbox with SIGTERM). As PID 1 of a pod
 * that shares its PID namespace it inherits orphans, so SIGCHLD reaps every exited child. */
#include <errno.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_terminate(int sig) { (void)sig; _exit(0); }

static void on_child(int sig) {
    int saved = errno; /* waitpid must not clobber errno of the interrupted pause() */
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {}
    errno = saved;
}

int main(void) {
    struct sigaction terminate = {.sa_handler = on_terminate};
    struct sigaction child = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP | SA_RESTART};
    if (sigaction(SIGINT, &terminate, NULL) || sigaction(SIGTERM, &terminate, NULL) ||
        sigaction(SIGCHLD, &child, NULL))
        return 1;
    for (;;) pause();
}
