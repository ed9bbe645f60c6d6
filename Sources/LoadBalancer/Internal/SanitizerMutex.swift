#if LB_TSAN_VISIBLE_LOCKS
    // Only in the ThreadSanitizer run of the unit tests (scripts/sanitizers.sh thread defines the flag).
    //
    // ThreadSanitizer cannot see Synchronization.Mutex's contended path on Linux: the wait and the
    // acquisition after it happen inside the standard library, which is not instrumented, so code that
    // only touches its state inside `withLock` is reported as racing (a 20-line program of four threads
    // under `Mutex.withLock` gets such reports). With the flag, this module's `Mutex` is the type
    // below: the same API over a pthread mutex, which ThreadSanitizer intercepts, so a report means a
    // real race in this package's code. The package's other modules and its tests use it through a
    // `typealias Mutex = LoadBalancer.Mutex` under the same flag.
    #if canImport(Glibc)
        import Glibc
    #elseif canImport(Musl)
        import Musl
    #elseif canImport(Darwin)
        import Darwin
    #endif

    @usableFromInline
    package struct Mutex<Value>: ~Copyable, @unchecked Sendable {
        @usableFromInline
        final class Storage {
            @usableFromInline let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
            @usableFromInline var value: Value

            init(_ value: Value) {
                self.value = value
                pthread_mutex_init(mutex, nil)
            }

            deinit {
                pthread_mutex_destroy(mutex)
                mutex.deallocate()
            }
        }

        @usableFromInline let storage: Storage

        package init(_ initialValue: consuming sending Value) {
            storage = Storage(initialValue)
        }

        @inlinable
        package borrowing func withLock<Result: ~Copyable, E: Error>(
            _ body: (inout sending Value) throws(E) -> sending Result
        ) throws(E) -> sending Result {
            pthread_mutex_lock(storage.mutex)
            defer { pthread_mutex_unlock(storage.mutex) }
            return try body(&storage.value)
        }
    }
#endif
