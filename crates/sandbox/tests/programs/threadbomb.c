/* Creates idle threads until the kernel refuses one. */
#include "attack.h"
#include <pthread.h>

static void *idle(void *arg) {
    (void)arg;
    for (;;)
        pause();
    return NULL;
}

int main(void) {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    for (int n = 0;; n++) {
        pthread_t t;
        int e = pthread_create(&t, &attr, idle, NULL);
        if (e != 0) {
            printf("pthread_create: %s after %d threads\n", errname(e), n);
            return 0;
        }
    }
}
