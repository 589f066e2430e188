//! The small file-system interface every byte of storage I/O goes through.
//!
//! [`StdFs`] is the real implementation; `shardlog_testkit::MemFs` is an
//! in-memory one that can lose unsynced writes, tear writes, fail fsync,
//! run out of space and flip bits, so tests can prove the durability rules.

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// Bytes of a file made readable by [`FileHandle::map`]: a read-only memory
/// map for real files, a snapshot for in-memory ones.
#[derive(Debug)]
pub enum Mapping {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Mapping {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Mapping::Mmap(m) => m,
            Mapping::Owned(v) => v,
        }
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Tells the kernel that this map is read at scattered places (see
    /// [`Mapping::advise_walk`] for the range then read through). Without
    /// it, each fault on a cold file reads the device's whole read-ahead
    /// window around the page (8 MiB here): recovery touches a segment's
    /// header, a checkpoint's anchor and its last frame, and read about six
    /// times the bytes it looked at. Hints only: errors are ignored, and
    /// in-memory mappings have nothing to hint.
    pub fn advise_scattered(&self) {
        if let Mapping::Mmap(m) = self {
            let _ = m.advise(memmap2::Advice::Random);
        }
    }

    /// Tells the kernel which range is read through next. A short walk is
    /// fetched ahead in one go and the map stays scattered; a long one (a
    /// whole segment without a checkpoint) goes back to sequential
    /// read-ahead, since page-by-page faults over it were ten times slower.
    pub fn advise_walk(&self, walk: std::ops::Range<usize>, short: bool) {
        if let Mapping::Mmap(m) = self {
            if !short {
                let _ = m.advise(memmap2::Advice::Sequential);
                return;
            }
            let start = walk.start / 4096 * 4096;
            let end = walk.end.min(m.len());
            if start < end {
                let _ = m.advise_range(memmap2::Advice::WillNeed, start, end - start);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An open file.
#[allow(clippy::len_without_is_empty)] // a file's length is what matters here
pub trait FileHandle: Send + Sync + Debug {
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset` (a positioned write; no file cursor).
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// `fdatasync`: makes the file's data (and its size) durable.
    fn sync_data(&self) -> io::Result<()>;
    /// Current length of the file in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Truncates or extends the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Reserves disk blocks so that the file is at least `len` bytes long and
    /// writes below `len` cannot fail for lack of space.
    fn allocate(&self, len: u64) -> io::Result<()>;
    /// Maps the first `len` bytes read-only.
    fn map(&self, len: usize) -> io::Result<Mapping>;
    /// Byte ranges at or after `from` that may hold non-zero data. Holes and
    /// preallocated, never-written space may be left out, which saves
    /// recovery from reading megabytes of zeros per log. The default claims
    /// everything.
    fn data_ranges(&self, from: u64) -> io::Result<Vec<(u64, u64)>> {
        let len = self.len()?;
        Ok(if from < len { vec![(from, len)] } else { Vec::new() })
    }
    /// Writes the file's dirty data from `offset` to its end to the device
    /// and waits for it, without a device cache flush and without
    /// metadata (`sync_file_range`). The bytes are durable once a flush
    /// follows (a `sync_data` of any file of the same file system), but only
    /// where [`FileSystem::shares_flushes`] holds and only in blocks that
    /// were written and covered by a `sync_data` of this file before: an
    /// overwrite in place, which needs no metadata. Anything else (space
    /// only preallocated, a length not yet synced) needs this file's own
    /// `sync_data`. The default runs `sync_data`, which is always enough.
    fn write_back(&self, offset: u64) -> io::Result<()> {
        let _ = offset;
        self.sync_data()
    }
    /// Asks the kernel to drop the file's clean cached pages in
    /// `offset..offset + len` (to the end of the file when `len` is `None`):
    /// `posix_fadvise(DONTNEED)`. Advice only: it never loses or changes
    /// data (dirty pages, pages under writeback and pages a reader has
    /// mapped stay cached; the kernel only starts writeback of the dirty
    /// ones), so a file system without a page cache may ignore it, as the
    /// default does.
    fn drop_cache(&self, offset: u64, len: Option<u64>) -> io::Result<()> {
        let _ = (offset, len);
        Ok(())
    }
    /// Asks the kernel to start reading `offset..offset + len` into the
    /// page cache now (`posix_fadvise(WILLNEED)`), so that many spans are
    /// read at once rather than one page per later write. Advice only, as
    /// [`FileHandle::drop_cache`]: the default ignores it.
    fn prefetch(&self, offset: u64, len: u64) -> io::Result<()> {
        let _ = (offset, len);
        Ok(())
    }
    /// Asks the kernel to start writing `offset..offset + len` back to the
    /// device now, without waiting (`sync_file_range(SYNC_FILE_RANGE_WRITE)`).
    /// It makes nothing durable (no metadata, no cache flush, no wait) and a
    /// later `sync_data` still writes and waits for every dirty page and
    /// reports a write-back error recorded on the file; the default ignores
    /// it. An error it returns may mean pages were dropped unwritten (an
    /// allocation failing in write-back), which no later sync would report.
    fn start_write_back(&self, offset: u64, len: u64) -> io::Result<()> {
        let _ = (offset, len);
        Ok(())
    }
}

/// Syncs a whole file system through a handle kept open (see
/// [`FileSystem::filesystem_syncer`]).
pub trait FsSyncer: Send + Sync + Debug {
    fn sync(&self) -> io::Result<()>;
}

#[derive(Debug)]
struct StdSyncer {
    dir: File,
}

impl FsSyncer for StdSyncer {
    fn sync(&self) -> io::Result<()> {
        rustix::fs::syncfs(&self.dir).map_err(io::Error::from)
    }
}

/// A held exclusive lock; released when dropped.
pub trait LockGuard: Send + Sync + Debug {}

/// Directory and file operations.
pub trait FileSystem: Send + Sync + Debug + 'static {
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Names of the entries of a directory (files only matter to callers).
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    fn exists(&self, path: &Path) -> bool;
    /// Creates a new file for reading and writing; fails if it exists.
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>>;
    /// Opens an existing file for reading and writing.
    fn open_rw(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>>;
    /// Opens an existing file for reading.
    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>>;
    /// Atomically replaces `to` with `from`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes creations, renames and removals in a directory durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Makes every file of the file system holding `path` durable at once
    /// (`syncfs`): one call instead of an fsync per file when many logs open.
    fn sync_filesystem(&self, path: &Path) -> io::Result<()>;
    /// A handle that runs [`FileSystem::sync_filesystem`] on a directory
    /// opened once. Linux reports a writeback error to each open file
    /// description once, so a long-lived handle sees every error since it
    /// was opened, where a handle opened per call can miss one that another
    /// caller already saw.
    fn filesystem_syncer(&self, path: &Path) -> io::Result<Box<dyn FsSyncer>>;
    /// Removes a directory and everything in it (no error if it is missing).
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Whether, on the file system holding `dir`, one file's `sync_data`
    /// also makes durable what [`FileHandle::write_back`] wrote of other
    /// files before it began, for overwrites of blocks already written and
    /// synced. That holds where such overwrites go in place and need no
    /// metadata, and where `fdatasync` always ends with a device cache
    /// flush, which covers every write the device completed before it. So
    /// logs of many shards can share one flush. The default says no.
    fn shares_flushes(&self, dir: &Path) -> bool {
        let _ = dir;
        false
    }
    /// Takes an exclusive, non-blocking lock on `path` (created if missing).
    /// Fails with `io::ErrorKind::WouldBlock` when it is held elsewhere.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>>;
}

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename, fsync
/// of the directory. Readers see the old or the new content, never a mix.
pub fn write_atomic(fs: &dyn FileSystem, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    if fs.exists(&tmp) {
        fs.remove_file(&tmp)?;
    }
    let file = fs.create_new(&tmp)?;
    file.write_all_at(bytes, 0)?;
    file.sync_data()?;
    drop(file);
    fs.rename(&tmp, path)?;
    fs.sync_dir(dir)
}

/// Reads a whole (small) file.
pub fn read_all(fs: &dyn FileSystem, path: &Path) -> io::Result<Vec<u8>> {
    let file = fs.open_read(path)?;
    let len = usize::try_from(file.len()?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file too large"))?;
    let mut buf = vec![0; len];
    file.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

/// Maps a whole file read-only. Nothing may truncate or write the file
/// while the map lives (reads would see changed bytes or fault).
pub fn map_all(fs: &dyn FileSystem, path: &Path) -> io::Result<Mapping> {
    let file = fs.open_read(path)?;
    let len = usize::try_from(file.len()?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file too large"))?;
    file.map(len)
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdFs;

#[derive(Debug)]
struct StdFile {
    file: File,
}

impl FileHandle for StdFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(&self.file, buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(&self.file, buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        let current = self.len()?;
        if current >= len {
            return Ok(());
        }
        match rustix::fs::fallocate(
            &self.file,
            rustix::fs::FallocateFlags::empty(),
            current,
            len - current,
        ) {
            Ok(()) => Ok(()),
            // File systems without fallocate (tmpfs on old kernels, some
            // network file systems) still work: writes extend the file, and
            // ENOSPC then surfaces from the write itself.
            Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => Ok(()),
            Err(e) => Err(io::Error::from(e)),
        }
    }

    fn write_back(&self, offset: u64) -> io::Result<()> {
        crate::mmap::write_back_from(&self.file, offset)
    }

    fn drop_cache(&self, offset: u64, len: Option<u64>) -> io::Result<()> {
        let len = match len {
            // Zero means "to the end" to fadvise; an empty range is nothing.
            Some(0) => return Ok(()),
            Some(n) => std::num::NonZeroU64::new(n),
            None => None,
        };
        rustix::fs::fadvise(&self.file, offset, len, rustix::fs::Advice::DontNeed).map_err(io::Error::from)
    }

    fn start_write_back(&self, offset: u64, len: u64) -> io::Result<()> {
        crate::mmap::start_write_back(&self.file, offset, len)
    }

    fn prefetch(&self, offset: u64, len: u64) -> io::Result<()> {
        // Zero means "to the end" to fadvise; an empty span is nothing.
        let Some(len) = std::num::NonZeroU64::new(len) else {
            return Ok(());
        };
        rustix::fs::fadvise(&self.file, offset, Some(len), rustix::fs::Advice::WillNeed)
            .map_err(io::Error::from)
    }

    fn map(&self, len: usize) -> io::Result<Mapping> {
        if len == 0 {
            return Ok(Mapping::Owned(Vec::new()));
        }
        crate::mmap::map_read_only(&self.file, len).map(Mapping::Mmap)
    }

    fn data_ranges(&self, from: u64) -> io::Result<Vec<(u64, u64)>> {
        use rustix::fs::{seek, SeekFrom};
        let len = self.len()?;
        let mut out = Vec::new();
        let mut at = from;
        while at < len {
            let start = match seek(&self.file, SeekFrom::Data(at)) {
                Ok(s) => s,
                // No data after `at`.
                Err(rustix::io::Errno::NXIO) => break,
                // SEEK_DATA unsupported: claim the rest.
                Err(_) => {
                    out.push((at, len));
                    break;
                }
            };
            let end = seek(&self.file, SeekFrom::Hole(start)).unwrap_or(len).min(len);
            if end <= start {
                break;
            }
            out.push((start, end));
            at = end;
        }
        Ok(out)
    }
}

#[derive(Debug)]
struct StdLock {
    _file: File,
}

impl LockGuard for StdLock {}

impl FileSystem for StdFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Arc::new(StdFile { file }))
    }

    fn open_rw(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Arc::new(StdFile { file }))
    }

    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>> {
        let file = OpenOptions::new().read(true).open(path)?;
        Ok(Arc::new(StdFile { file }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn sync_filesystem(&self, path: &Path) -> io::Result<()> {
        let dir = File::open(path)?;
        rustix::fs::syncfs(&dir).map_err(io::Error::from)
    }

    fn filesystem_syncer(&self, path: &Path) -> io::Result<Box<dyn FsSyncer>> {
        Ok(Box::new(StdSyncer {
            dir: File::open(path)?,
        }))
    }

    fn shares_flushes(&self, dir: &Path) -> bool {
        let Ok(st) = rustix::fs::statfs(dir) else {
            return false;
        };
        // Magic numbers of statfs(2); ext2, ext3 and ext4 share one. They
        // overwrite written blocks in place, and their fdatasync flushes
        // the device cache even when it has no metadata to commit (the
        // journal's commit block, or a flush of its own). Everything else
        // is left out: copy-on-write file systems (btrfs, ZFS) allocate new
        // blocks for every write, and so does XFS for an extent it shares
        // with a reflinked copy (`cp --reflink`, which coreutils uses by
        // default), with the remapping in a log transaction another file's
        // fdatasync does not force.
        const EXT4_SUPER_MAGIC: i64 = 0xEF53;
        const TMPFS_MAGIC: i64 = 0x0102_1994;
        // f_type is i64 on x86-64 but narrower elsewhere.
        #[allow(clippy::unnecessary_cast)]
        let f_type = st.f_type as i64;
        match f_type {
            EXT4_SUPER_MAGIC => write_back_waits_like_fdatasync() && ext4_overwrites_in_place(dir),
            TMPFS_MAGIC => true,
            _ => false,
        }
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        match std::fs::remove_dir_all(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Box::new(StdLock { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "lock is held by another process",
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

/// Whether the ext2/3/4 file system holding `dir` writes file data in
/// place, outside its journal, and flushes the device cache on
/// `fdatasync`. Data journaling (`data=journal`, as a mount option or the
/// super block's default, or the `j` attribute that `chattr +j` puts on a
/// directory for the files made in it) puts written-back data only in the
/// journal, which another file's flush does not commit; `nobarrier` leaves
/// out the flush. The effective options are read from
/// `/proc/fs/ext4/<device>/options`, which lists defaults too, and only
/// when that file is readable is the answer yes.
fn ext4_overwrites_in_place(dir: &Path) -> bool {
    let journaled_dir = std::fs::File::open(dir)
        .and_then(|d| rustix::fs::ioctl_getflags(&d).map_err(io::Error::from))
        .map_or(true, |flags| flags.contains(rustix::fs::IFlags::JOURNALING));
    if journaled_dir {
        return false;
    }
    let Some(mount) = mount_of(dir) else {
        return false;
    };
    // The device's name under /sys/dev/block (vda, sda1, dm-0): the name
    // ext4 uses in /proc/fs/ext4.
    let dev = std::fs::read_link(format!("/sys/dev/block/{}", mount.device))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let Some(options) = dev.and_then(|d| std::fs::read_to_string(format!("/proc/fs/ext4/{d}/options")).ok())
    else {
        return false;
    };
    let bad = |o: &str| o == "data=journal" || o == "journal_data" || o == "nobarrier" || o == "barrier=0";
    !options
        .split(|c: char| c == ',' || c.is_whitespace())
        .chain(mount.options.split(','))
        .any(bad)
}

/// Whether this kernel's `sync_file_range` with all three flags writes in
/// the integrity mode `fdatasync` uses (Linux 5.2 and later); before, it
/// could skip a page redirtied while under writeback.
fn write_back_waits_like_fdatasync() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(['.', '-']).map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (5, 2),
        _ => false,
    }
}

/// A mount from `/proc/self/mountinfo`.
struct Mount {
    /// `major:minor` of its device.
    device: String,
    /// Its super-block options (the last field).
    options: String,
}

/// The mount holding `dir`: the mount point that is the longest prefix of
/// its canonical path. `None` when that cannot be read.
fn mount_of(dir: &Path) -> Option<Mount> {
    let dir = std::fs::canonicalize(dir).ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(usize, Mount)> = None;
    for line in info.lines() {
        // "id parent major:minor root mount-point options [tags] - type source super-options"
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(device), Some(point), Some(options)) = (fields.get(2), fields.get(4), fields.get(dash + 3))
        else {
            continue;
        };
        // The kernel escapes spaces, tabs, newlines and backslashes as octal.
        let point = point
            .replace("\\040", " ")
            .replace("\\011", "\t")
            .replace("\\012", "\n")
            .replace("\\134", "\\");
        let depth = Path::new(&point).components().count();
        if dir.starts_with(&point) && best.as_ref().is_none_or(|(d, _)| depth >= *d) {
            best = Some((
                depth,
                Mount {
                    device: device.to_string(),
                    options: options.to_string(),
                },
            ));
        }
    }
    best.map(|(_, m)| m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mount_holding_a_directory_is_found_with_its_device_and_options() {
        let root = mount_of(Path::new("/")).expect("the root is mounted");
        assert!(!root.options.is_empty());
        assert!(root.device.contains(':'), "{}", root.device);
        let tmp = tempfile::tempdir().unwrap();
        assert!(mount_of(tmp.path()).is_some());
        assert!(mount_of(Path::new("/no/such/dir")).is_none());
    }

    #[test]
    fn a_directory_whose_files_journal_their_data_shares_no_flushes() {
        // On the disk of the build, not /tmp, which may be tmpfs.
        let tmp = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let dir = std::fs::File::open(tmp.path()).unwrap();
        let Ok(flags) = rustix::fs::ioctl_getflags(&dir) else {
            return; // no inode flags here (tmpfs): nothing to set
        };
        if rustix::fs::ioctl_setflags(&dir, flags | rustix::fs::IFlags::JOURNALING).is_err() {
            return; // setting `j` needs CAP_SYS_RESOURCE
        }
        assert!(!ext4_overwrites_in_place(tmp.path()));
    }

    #[test]
    fn a_real_file_writes_back_and_keeps_its_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let file = StdFs.create_new(&tmp.path().join("f")).unwrap();
        file.write_all_at(&[7; 8192], 0).unwrap();
        file.sync_data().unwrap();
        file.write_all_at(&[9; 100], 4000).unwrap();
        file.write_back(4000).unwrap();
        file.write_back(0).unwrap();
        let mut buf = [0u8; 100];
        file.read_exact_at(&mut buf, 4000).unwrap();
        assert_eq!(buf, [9; 100]);
        // procfs is none of the file systems known to share flushes safely.
        assert!(!StdFs.shares_flushes(Path::new("/proc")));
        // The kernels CI runs on are newer than 5.2.
        assert!(write_back_waits_like_fdatasync());
    }

    #[test]
    fn advice_on_a_real_file_changes_none_of_its_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let file = StdFs.create_new(&tmp.path().join("f")).unwrap();
        file.write_all_at(&[3; 3 * 4096], 0).unwrap();
        file.sync_data().unwrap();
        file.prefetch(100, 5000).unwrap();
        // An empty span is no advice (zero would mean "to the end").
        file.prefetch(0, 0).unwrap();
        file.drop_cache(0, None).unwrap();
        file.prefetch(4096, 8192).unwrap();
        // Write-back started early leaves the bytes as written, and the
        // sync after it still succeeds.
        file.write_all_at(&[3; 4096], 4096).unwrap();
        file.start_write_back(4096, 4096).unwrap();
        file.sync_data().unwrap();
        let mut buf = vec![0u8; 3 * 4096];
        file.read_exact_at(&mut buf, 0).unwrap();
        assert!(buf.iter().all(|&b| b == 3));
    }
}
