//! Reading a whole per-CPU hash map with `BPF_MAP_LOOKUP_BATCH` (Linux 5.6+): one syscall per
//! few thousand entries instead of two per entry (`get_next_key` + lookup), which is what makes
//! `top` over a million sources affordable. aya 0.14 has no batch operations, so this is the
//! one raw `bpf()` call in the crate.

use std::{
    io,
    mem::size_of,
    os::fd::{AsRawFd as _, BorrowedFd},
};

use aya::Pod;

/// `BPF_MAP_LOOKUP_BATCH` from `include/uapi/linux/bpf.h`.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Every entry of a per-CPU hash map (plain or LRU): each key with its `ncpus` values.
///
/// Entries added or removed while it runs may or may not appear, as with any iteration of a live
/// map. Errors with `EINVAL`/`ENOTSUPP`-like codes on kernels without batch support; the caller
/// falls back to per-entry iteration.
pub fn lookup_all_percpu<K: Pod, V: Pod>(
    fd: BorrowedFd<'_>,
    ncpus: usize,
) -> io::Result<Vec<(K, Vec<V>)>> {
    // The kernel copies per-CPU values each rounded up to 8 bytes.
    let vsize = size_of::<V>().div_ceil(8) * 8;
    let stride = vsize * ncpus;
    let mut chunk: usize = 4096;
    let mut keys = vec![0u8; chunk * size_of::<K>()];
    let mut values = vec![0u8; chunk * stride];
    let mut out = Vec::new();
    // For hash maps the batch token is a bucket index (u32).
    let mut token_in: u32 = 0;
    let mut token_out: u32 = 0;
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                &token_in as *const u32 as u64
            },
            out_batch: &mut token_out as *mut u32 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: fd.as_raw_fd() as u32,
            elem_flags: 0,
            flags: 0,
        };
        // SAFETY: `attr` is a valid bpf_attr prefix for this command; the key and value buffers
        // hold `count` entries of the map's key size and per-CPU value stride, and the batch
        // tokens are valid u32s; all outlive the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                size_of::<BatchAttr>() as u32,
            )
        };
        let err = (r < 0).then(io::Error::last_os_error);
        let n = attr.count as usize;
        if let Some(e) = &err
            && e.raw_os_error() == Some(libc::ENOSPC)
            && n == 0
        {
            // One bucket holds more entries than fit: grow and retry the same batch.
            chunk *= 2;
            keys.resize(chunk * size_of::<K>(), 0);
            values.resize(chunk * stride, 0);
            continue;
        }
        for i in 0..n.min(chunk) {
            // SAFETY: the kernel filled `n` keys and values; K and V are Pod (any bytes valid),
            // and read_unaligned makes no alignment assumption about the byte buffers.
            let key = unsafe {
                keys.as_ptr()
                    .add(i * size_of::<K>())
                    .cast::<K>()
                    .read_unaligned()
            };
            let per_cpu = (0..ncpus)
                .map(|c| {
                    // SAFETY: as above, within entry i's stride.
                    unsafe {
                        values
                            .as_ptr()
                            .add(i * stride + c * vsize)
                            .cast::<V>()
                            .read_unaligned()
                    }
                })
                .collect();
            out.push((key, per_cpu));
        }
        match err {
            None => {}
            // The end of the map (the last batch may still have carried entries).
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
            Some(e) => return Err(e),
        }
        token_in = token_out;
        first = false;
    }
}
