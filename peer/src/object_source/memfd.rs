//! [`Memfd`]: one object's bytes in an anonymous, sealable memory file.
//!
//! Design decision: plain `libc` (`memfd_create` through `syscall`, `fcntl`
//! seals) rather than a crate; the descriptor is owned by a `File`, so nothing
//! leaks on an error path. Both the agent's cache and the peer layer write
//! into it and read it back, so it lives beside the fetcher seam.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::FileExt;

use ossc_core::object_client::RangeSink;

/// Longest name `memfd_create` accepts, excluding the NUL (249 on Linux, as
/// `/memfd:` is prepended to make the 255-byte limit of a dentry name).
pub const MEMFD_NAME_MAX: usize = 249;

/// Prefix of every memfd name the agent creates; the `/proc` scan looks for it.
pub const MEMFD_NAME_PREFIX: &str = "ossc:";

/// All four seals: the content can never change again once sealed.
const ALL_SEALS: libc::c_int =
    libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;

/// An anonymous in-memory file holding one object.
#[derive(Debug)]
pub struct Memfd {
    file: File,
    size: u64,
    ino: u64,
    name: String,
}

impl Memfd {
    /// `memfd_create("ossc:<key>")` + `ftruncate(size)`. Pages are allocated
    /// only as they are written.
    pub fn create(key: &str, size: u64) -> io::Result<Memfd> {
        let name = memfd_name(key);
        let cname = CString::new(name.clone())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in memfd name"))?;
        // The raw system call, not glibc's wrapper: the wrapper came with glibc 2.27 and the
        // shipped binary links against glibc 2.17 (scripts/package.sh), while the system call
        // itself exists since Linux 3.17.
        // SAFETY: `cname` is a valid NUL-terminated string that outlives the call; the flags
        // argument is an unsigned int, as memfd_create(2) takes it.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_memfd_create,
                cname.as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        } as libc::c_int;
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(size)?;
        let ino = std::os::unix::fs::MetadataExt::ino(&file.metadata()?);
        Ok(Memfd {
            file,
            size,
            ino,
            name,
        })
    }

    /// Applies every seal; afterwards writes, growth and shrinking fail.
    pub fn seal(&self) -> io::Result<()> {
        // SAFETY: F_ADD_SEALS takes an int argument; the fd is valid for `self`'s lifetime.
        let rc = unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_ADD_SEALS, ALL_SEALS) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Inode number: how other processes' references are recognised in `/proc`.
    pub fn ino(&self) -> u64 {
        self.ino
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// `pread` of exactly `buf.len()` bytes at `offset` (allowed after sealing).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > self.size)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("read past end of {} ({} bytes)", self.name, self.size),
            ));
        }
        self.file.read_exact_at(buf, offset)
    }

    /// `preadv` of exactly the bytes `bufs` hold, from `offset` (several
    /// calls if the kernel returns fewer).
    pub fn read_vectored_at(
        &self,
        mut offset: u64,
        mut bufs: &mut [io::IoSliceMut<'_>],
    ) -> io::Result<()> {
        let len: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        if offset.checked_add(len).is_none_or(|end| end > self.size) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("read past end of {} ({} bytes)", self.name, self.size),
            ));
        }
        io::IoSliceMut::advance_slices(&mut bufs, 0);
        while !bufs.is_empty() {
            let count = bufs.len().min(IOV_MAX) as libc::c_int;
            // SAFETY: `IoSliceMut` is ABI-compatible with `iovec`; the first
            // `count` entries describe writable buffers borrowed for the
            // call; the fd is valid for `self`'s lifetime.
            let n = unsafe {
                libc::preadv(
                    self.file.as_raw_fd(),
                    bufs.as_ptr().cast::<libc::iovec>(),
                    count,
                    offset as libc::off_t,
                )
            };
            match n {
                n if n > 0 => {
                    io::IoSliceMut::advance_slices(&mut bufs, n as usize);
                    offset += n as u64;
                }
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                _ => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Most buffers one `preadv` takes (Linux's `UIO_MAXIOV`).
const IOV_MAX: usize = 1024;

impl RangeSink for Memfd {
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if offset
            .checked_add(data.len() as u64)
            .is_none_or(|end| end > self.size)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("write past end of {} ({} bytes)", self.name, self.size),
            ));
        }
        self.file.write_all_at(data, offset)
    }
}

/// `ossc:<key>`, truncated on a character boundary to [`MEMFD_NAME_MAX`].
pub fn memfd_name(key: &str) -> String {
    let mut name = format!("{MEMFD_NAME_PREFIX}{key}");
    if name.len() > MEMFD_NAME_MAX {
        let mut cut = MEMFD_NAME_MAX;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    name.replace('\0', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memfd_name_is_truncated_on_char_boundary() {
        let key = "é".repeat(200);
        let n = memfd_name(&key);
        assert!(n.len() <= MEMFD_NAME_MAX);
        assert!(n.starts_with(MEMFD_NAME_PREFIX));
    }

    #[test]
    fn a_vectored_read_fills_every_buffer_in_turn_and_stays_inside() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let m = Memfd::create("vectored", data.len() as u64).unwrap();
        m.write_at(0, &data).unwrap();
        let (mut a, mut b, mut c) = (vec![0u8; 3], vec![0u8; 0], vec![0u8; 70_000]);
        let mut bufs = [
            io::IoSliceMut::new(&mut a),
            io::IoSliceMut::new(&mut b),
            io::IoSliceMut::new(&mut c),
        ];
        m.read_vectored_at(1_000, &mut bufs).unwrap();
        assert_eq!(a, data[1_000..1_003]);
        assert!(c == data[1_003..71_003]);
        let mut past = vec![0u8; 70_000];
        let err = m
            .read_vectored_at(30_001, &mut [io::IoSliceMut::new(&mut past)])
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
