#include "CHeapInfo.h"

#if defined(__linux__)
#include <malloc.h>  // defines __GLIBC__ (through features.h) on glibc
#endif

#if defined(__GLIBC__)
long long lb_heap_in_use(void) {
    struct mallinfo2 info = mallinfo2();
    return (long long)(info.uordblks + info.hblkhd);
}

int lb_heap_trim(void) {
    return malloc_trim(0);
}
#else
long long lb_heap_in_use(void) {
    return -1;
}

int lb_heap_trim(void) {
    return 0;
}
#endif
