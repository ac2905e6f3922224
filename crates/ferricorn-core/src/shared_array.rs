//! Arrays in anonymous shared memory: mapped once by the master before it forks, so
//! every worker inherits the same pages, and never unmapped. The master's view of its
//! workers (heartbeats, request counters) lives in these, one slot per worker.

use std::ptr::NonNull;

/// Types for which all-zero bytes are a valid value (atomics, arrays of them): the
/// mapping starts zeroed.
///
/// # Safety
/// Implement only for types whose every field is valid when all its bytes are zero.
pub unsafe trait ZeroInit: Sync + 'static {}

pub struct SharedArray<T: ZeroInit> {
    base: NonNull<T>,
    len: usize,
}

// SAFETY: `T: ZeroInit` is `Sync`, and slots are only handed out as shared references.
unsafe impl<T: ZeroInit> Send for SharedArray<T> {}
unsafe impl<T: ZeroInit> Sync for SharedArray<T> {}

impl<T: ZeroInit> SharedArray<T> {
    pub fn new(len: usize) -> std::io::Result<Self> {
        let len = len.max(1);
        let bytes = len * std::mem::size_of::<T>();
        // SAFETY: a fresh anonymous shared mapping, zero-filled by the kernel, which is a
        // valid array of `T` (`ZeroInit`).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let base = NonNull::new(ptr.cast()).ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENOMEM))?;
        Ok(Self { base, len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every slot (see `slot` for why `'static` holds).
    pub fn all(&self) -> &'static [T] {
        // SAFETY: `len` slots from `base` are mapped and never unmapped.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr(), self.len) }
    }

    /// The mapping is never unmapped (master and workers use it until they exit), so a
    /// slot reference is valid for the rest of the process.
    pub fn slot(&self, i: usize) -> Option<&'static T> {
        // SAFETY: in bounds of a mapping that is never unmapped.
        (i < self.len).then(|| unsafe { &*self.base.as_ptr().add(i) })
    }
}
