//! File-system steps the store relies on for crash safety: the directory lock, atomic
//! replacement, directory fsync and keeping damaged files aside.

use std::{
    fs::{self, DirBuilder, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    os::unix::io::AsRawFd,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use super::StoreError;

/// Maps an I/O error on `path` to [`StoreError::Io`].
pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Creates `dir` (mode 0700) if missing; returns a warning if others may write to it.
pub(super) fn prepare_dir(dir: &Path) -> Result<Option<String>, StoreError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir))?;
    let mode = fs::metadata(dir).map_err(io_err(dir))?.permissions().mode();
    Ok((mode & 0o022 != 0).then(|| {
        format!(
            "{} is writable by group or others (mode {:04o}); whoever can write it can change the \
             block rules",
            dir.display(),
            mode & 0o7777
        )
    }))
}

/// How long opening the store waits for its lock: a predecessor killed a moment ago may still be
/// exiting. (Short in unit tests, which check the refusal.)
#[cfg(not(test))]
const LOCK_WAIT: Duration = Duration::from_secs(10);
#[cfg(test)]
const LOCK_WAIT: Duration = Duration::from_millis(200);

/// Opens `dir` and takes an exclusive lock on it for as long as the returned handle lives, so
/// two processes never append to one journal. Waits up to [`LOCK_WAIT`] for another holder to
/// let go. The handle also serves to fsync the directory.
pub(super) fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    let handle = File::open(dir).map_err(io_err(dir))?;
    let deadline = Instant::now() + LOCK_WAIT;
    let mut said = false;
    loop {
        // SAFETY: flock(2) on a descriptor we own; no memory is shared with the kernel.
        let rc = unsafe { libc::flock(handle.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(handle);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(io_err(dir)(e));
        }
        if Instant::now() >= deadline {
            return Err(StoreError::Locked {
                path: dir.to_owned(),
            });
        }
        if !said {
            tracing::info!(
                dir = %dir.display(),
                "rule store locked by another process; waiting up to {LOCK_WAIT:?} for it to exit"
            );
            said = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Removes `path` if it exists.
pub(super) fn remove_if_present(path: &Path) -> Result<bool, StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Replaces `dir/name` atomically: `fill` writes `name.tmp` (0600), which is fsync'd and renamed
/// over `name`, then the directory is fsync'd. A crash leaves either the old file or the new.
fn replace_atomic(
    dir: &Path,
    dir_handle: &File,
    name: &str,
    fill: impl FnOnce(&mut File, &Path) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    fill(&mut file, &tmp)?;
    file.sync_all().map_err(io_err(&tmp))?;
    drop(file);
    let path = dir.join(name);
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    dir_handle.sync_all().map_err(io_err(dir))
}

/// Replaces `dir/name` with `bytes` so that a crash leaves either the old or the new file: write
/// `name.tmp`, fsync it, rename it over `name`, fsync the directory (`dir_handle`).
pub(super) fn write_atomic(
    dir: &Path,
    dir_handle: &File,
    name: &str,
    bytes: &[u8],
) -> Result<(), StoreError> {
    replace_atomic(dir, dir_handle, name, |file, tmp| {
        file.write_all(bytes).map_err(io_err(tmp))
    })
}

/// Like [`write_atomic`], with the first `len` bytes of the file `src` as the content.
pub(super) fn replace_with_prefix(
    dir: &Path,
    dir_handle: &File,
    name: &str,
    src: &Path,
    len: u64,
) -> Result<(), StoreError> {
    let mut from = io::Read::take(File::open(src).map_err(io_err(src))?, len);
    replace_atomic(dir, dir_handle, name, |file, tmp| {
        let copied = io::copy(&mut from, file).map_err(io_err(tmp))?;
        if copied != len {
            return Err(io_err(src)(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("expected {len} bytes, read {copied}"),
            )));
        }
        Ok(())
    })
}

/// Copies `dir/name` to `dir/name.damaged-<unix seconds>` (adding `.1`, `.2`, … rather than
/// overwriting an earlier copy), fsyncs the copy and the directory, and returns the copy's path.
pub(super) fn set_aside(dir: &Path, dir_handle: &File, name: &str) -> Result<PathBuf, StoreError> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let src_path = dir.join(name);
    let mut src = File::open(&src_path).map_err(io_err(&src_path))?;
    for n in 0..10_000u32 {
        let path = if n == 0 {
            dir.join(format!("{name}.damaged-{secs}"))
        } else {
            dir.join(format!("{name}.damaged-{secs}.{n}"))
        };
        let mut copy = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err(&path)(e)),
        };
        io::copy(&mut src, &mut copy).map_err(io_err(&path))?;
        copy.sync_all().map_err(io_err(&path))?;
        dir_handle.sync_all().map_err(io_err(dir))?;
        return Ok(path);
    }
    Err(io_err(&src_path)(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "too many damaged copies already kept aside",
    )))
}
