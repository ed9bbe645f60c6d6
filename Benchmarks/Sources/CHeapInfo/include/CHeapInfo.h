#ifndef CHEAPINFO_H
#define CHEAPINFO_H

/// The bytes malloc has handed out and not had back, over all arenas, large (mmapped) blocks
/// included; -1 where the C library does not say (glibc's mallinfo2 is used where present).
long long lb_heap_in_use(void);

/// Gives the pages malloc holds but does not use back to the system (glibc's malloc_trim(0));
/// returns 1 if any were given back, 0 if none or where the C library has no such call.
int lb_heap_trim(void);

#endif
