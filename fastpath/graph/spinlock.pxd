"""A test-and-test-and-set spinlock on an int, for the few places workers write shared
state (Fdb writers, a shared-memory port's transmit ring). Held for nanoseconds, never
across a system call that can block."""

cdef extern from *:
    """
    static inline void fp_spin_lock(int *l) {
        while (__atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE))
            while (__atomic_load_n(l, __ATOMIC_RELAXED)) __builtin_ia32_pause();
    }
    static inline void fp_spin_unlock(int *l) { __atomic_store_n(l, 0, __ATOMIC_RELEASE); }
    """
    void fp_spin_lock(int *l) nogil
    void fp_spin_unlock(int *l) nogil
