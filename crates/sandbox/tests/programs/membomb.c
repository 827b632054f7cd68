/* Allocates and touches 1 MiB blocks forever. */
#include "attack.h"

int main(void) {
    for (;;) {
        char *p = malloc(1 << 20);
        if (p == NULL) {
            printf("malloc: NULL\n");
            return 0;
        }
        memset(p, 0xa5, 1 << 20);
    }
}
