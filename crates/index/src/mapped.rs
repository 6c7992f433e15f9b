//! `Mapped<T>`: a zeroed array in its own anonymous mapping (memmap2),
//! unmapped on drop, for the key directory's large arrays (`index::keys`).
//!
//! Why not a `Vec`: glibc raises its mmap threshold to the size of any large
//! block `free`d, after which every thread's arena keeps up to twice that of
//! freed memory resident; freezing the threshold with `mallopt` instead
//! makes every larger buffer an `mmap` and costs CPU per op (measured: see
//! docs/src/performance.md, "Figures behind design choices"). Pages never
//! written stay unallocated.
//!
//! Invariants: `T` is plain integers (every byte pattern, all-zero
//! included, is a valid `T`: [`Plain`] says so), the mapping is page-aligned
//! (so aligned for `T`) and holds `len * size_of::<T>()` bytes for as long
//! as the `Mapped` lives. The one `unsafe` of the index is the view of those
//! bytes as `[T]`.

#![allow(unsafe_code)]

use std::marker::PhantomData;

/// Mappings from this size on ask for transparent huge pages.
const HUGE_PAGE: usize = 2 << 20;

/// Types whose every bit pattern is a valid value (integers, and packed
/// structs of them), so that zeroed or mapped bytes can be viewed as them.
///
/// # Safety
/// Implement only for such types.
pub(crate) unsafe trait Plain: Copy {}

// SAFETY: every bit pattern is a valid `u32`.
unsafe impl Plain for u32 {}

// SAFETY: every bit pattern is a valid `u64`.
unsafe impl Plain for u64 {}

/// `len` elements of `T` in an anonymous private mapping.
pub(crate) struct Mapped<T: Plain> {
    map: memmap2::MmapMut,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Plain> Mapped<T> {
    /// `len` zeroed elements.
    pub(crate) fn zeroed(len: usize) -> std::io::Result<Self> {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(|| std::io::Error::other("key directory size overflows"))?;
        // A mapping cannot be empty: one byte stands for none (never read).
        let map = memmap2::MmapMut::map_anon(bytes.max(1))?;
        if bytes >= HUGE_PAGE {
            // Best effort: fewer TLB misses per lookup where the kernel's
            // transparent huge pages are on for `madvise` (or always).
            let _ = map.advise(memmap2::Advice::HugePage);
        }
        Ok(Mapped {
            map,
            len,
            _t: PhantomData,
        })
    }
}

impl<T: Plain> std::ops::Deref for Mapped<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: the mapping is page-aligned (aligned for `T`), holds
        // `len * size_of::<T>()` initialised bytes (zeroed, then written
        // through `deref_mut` only), lives as long as `self`, and every byte
        // pattern is a valid `T` (`Plain`).
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().cast::<T>(), self.len) }
    }
}

impl<T: Plain> std::ops::DerefMut for Mapped<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`; `&mut self` makes the view exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().cast::<T>(), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_writable_and_empty() {
        let mut m = Mapped::<u32>::zeroed(3 << 20).unwrap();
        assert!(m.iter().all(|&x| x == 0));
        m[5] = 7;
        assert_eq!(m[5], 7);
        assert_eq!(m.len(), 3 << 20);
        assert!(Mapped::<u32>::zeroed(0).unwrap().is_empty());
    }
}
