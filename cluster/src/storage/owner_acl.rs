//! Owner-only files on Windows: the ACL counterpart of the Unix mode rule in `private_dir`.
//!
//! Owns (1) the decision "does this DACL let a broad group reach the object?", a pure function
//! over (SID, ACE type, access mask) entries, compiled and unit-tested on every platform; and
//! (2) on Windows only, reading a path's DACL, and creating files and directories with a
//! protected DACL (no inherited entries) that admits only the account the process runs as (the
//! service account), SYSTEM and Administrators. The data directory, the KEK file and the node's
//! sealed key are created that way and checked at start (`private_dir`, the `node` crate).
//!
//! Must never: loosen an existing ACL, treat a missing (NULL) DACL as private (it grants
//! everyone everything), or accept an ACE it cannot read.
//!
//! What is refused: an allow entry for Everyone, Users, Authenticated Users, Guests or
//! Anonymous Logon with any right that reads, writes, deletes or re-permissions the object
//! (`REACH_MASK`). Deny entries are ignored, which can only make the check stricter than
//! Windows' own evaluation. Other named accounts are the administrator's choice, as a Unix
//! owner may share a file with root; only the groups that mean "any user of this machine" are
//! refused, like Unix's group/other bits.

use std::fmt;

/// Well-known SIDs (MS-DTYP 2.4.2.4).
pub const EVERYONE: &str = "S-1-1-0";
pub const ANONYMOUS_LOGON: &str = "S-1-5-7";
pub const AUTHENTICATED_USERS: &str = "S-1-5-11";
pub const LOCAL_SYSTEM: &str = "S-1-5-18";
pub const ADMINISTRATORS: &str = "S-1-5-32-544";
pub const USERS: &str = "S-1-5-32-545";
pub const GUESTS: &str = "S-1-5-32-546";

/// Access rights (winnt.h) that let a holder read, change, delete or re-permission a file or
/// list a directory. FILE_LIST_DIRECTORY shares FILE_READ_DATA's bit, FILE_ADD_FILE
/// FILE_WRITE_DATA's and FILE_ADD_SUBDIRECTORY FILE_APPEND_DATA's.
pub const FILE_READ_DATA: u32 = 0x0001;
pub const FILE_WRITE_DATA: u32 = 0x0002;
pub const FILE_APPEND_DATA: u32 = 0x0004;
pub const FILE_DELETE_CHILD: u32 = 0x0040;
pub const DELETE: u32 = 0x0001_0000;
pub const WRITE_DAC: u32 = 0x0004_0000;
pub const WRITE_OWNER: u32 = 0x0008_0000;
pub const GENERIC_ALL: u32 = 0x1000_0000;
pub const GENERIC_WRITE: u32 = 0x4000_0000;
pub const GENERIC_READ: u32 = 0x8000_0000;
/// Read, execute and attribute rights without these (e.g. FILE_READ_ATTRIBUTES, SYNCHRONIZE)
/// reveal nothing of the content.
pub const REACH_MASK: u32 = FILE_READ_DATA
    | FILE_WRITE_DATA
    | FILE_APPEND_DATA
    | FILE_DELETE_CHILD
    | DELETE
    | WRITE_DAC
    | WRITE_OWNER
    | GENERIC_ALL
    | GENERIC_WRITE
    | GENERIC_READ;

/// What a SID stands for, as far as this check cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SidKind {
    /// A group that means "any user of this machine" (or anyone at all): never admitted.
    Broad(&'static str),
    /// SYSTEM or Administrators: always admitted (they can take ownership anyway).
    Trusted,
    /// A named account or group, such as the service account.
    Account,
}

/// Classifies a SID in its string form (`S-1-5-...`).
pub fn sid_kind(sid: &str) -> SidKind {
    match sid {
        EVERYONE => SidKind::Broad("Everyone"),
        ANONYMOUS_LOGON => SidKind::Broad("Anonymous Logon"),
        AUTHENTICATED_USERS => SidKind::Broad("Authenticated Users"),
        USERS => SidKind::Broad("Users"),
        GUESTS => SidKind::Broad("Guests"),
        LOCAL_SYSTEM | ADMINISTRATORS => SidKind::Trusted,
        _ => SidKind::Account,
    }
}

/// The type of one ACE, as far as this check cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AceType {
    Allow,
    Deny,
    /// Any other type (callback, object, ...): not expected on a file, refused.
    Other(u8),
}

/// One entry of a DACL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AceEntry {
    pub sid: String,
    pub ace_type: AceType,
    pub mask: u32,
}

/// Why a path's ACL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclRefusal {
    /// A NULL DACL: everyone has every right.
    #[error("it has no DACL, so everyone has full access")]
    NoDacl,
    /// A broad group holds a right in `REACH_MASK`.
    #[error("its ACL grants {who} access (mask {mask:#010x})")]
    Broad { who: &'static str, mask: u32 },
    /// An ACE type this check cannot judge.
    #[error("its ACL holds an entry of type {0} this check cannot read")]
    UnknownAce(u8),
}

impl AclRefusal {
    /// The fix an administrator runs, for the error message: owner-only, no inherited
    /// entries; for a directory inherited by what is created in it.
    pub fn remedy(path: &dyn fmt::Display, dir: bool) -> String {
        let r = if dir { "(OI)(CI)F" } else { "F" };
        format!(
            "icacls \"{path}\" /inheritance:r /grant:r \"<service account>:{r}\" SYSTEM:{r} Administrators:{r}"
        )
    }
}

/// The decision: `dacl` is `None` for a NULL DACL. `Ok` when only the owner's account, SYSTEM,
/// Administrators and other named accounts hold rights that reach the content.
pub fn check_dacl(dacl: Option<&[AceEntry]>) -> Result<(), AclRefusal> {
    let entries = dacl.ok_or(AclRefusal::NoDacl)?;
    for ace in entries {
        match ace.ace_type {
            AceType::Deny => continue,
            AceType::Other(t) => return Err(AclRefusal::UnknownAce(t)),
            AceType::Allow => {}
        }
        if let SidKind::Broad(who) = sid_kind(&ace.sid)
            && ace.mask & REACH_MASK != 0
        {
            return Err(AclRefusal::Broad {
                who,
                mask: ace.mask,
            });
        }
    }
    Ok(())
}

#[cfg(windows)]
pub use windows::{create_dir_private, create_file_private, read_dacl};

/// Why `path`'s ACL is refused (`Ok(None)` when it is owner-only). Windows only.
#[cfg(windows)]
pub fn refusal(path: &std::path::Path) -> std::io::Result<Option<AclRefusal>> {
    let dacl = read_dacl(path)?;
    Ok(check_dacl(dacl.as_deref()).err())
}

#[cfg(windows)]
#[allow(unsafe_code)]
mod windows {
    //! The Win32 calls: GetNamedSecurityInfoW to read a DACL, and CreateFileW/CreateDirectoryW
    //! with a security descriptor made from SDDL, so a new key file is never readable by others,
    //! not even for the moment between its creation and a later SetSecurityInfo.

    use std::ffi::c_void;
    use std::fs::File;
    use std::io;
    use std::os::windows::ffi::OsStrExt;
    use std::os::windows::io::{FromRawHandle, OwnedHandle};
    use std::path::Path;
    use std::ptr::null_mut;

    use windows_sys::Win32::Foundation::{
        ERROR_SUCCESS, GENERIC_READ, GENERIC_WRITE, HANDLE, INVALID_HANDLE_VALUE, LocalFree,
    };
    use windows_sys::Win32::Security::Authorization::{
        ConvertSidToStringSidW, ConvertStringSecurityDescriptorToSecurityDescriptorW,
        GetNamedSecurityInfoW, SDDL_REVISION_1, SE_FILE_OBJECT,
    };
    use windows_sys::Win32::Security::{
        ACE_HEADER, ACL, DACL_SECURITY_INFORMATION, GetAce, GetTokenInformation,
        PSECURITY_DESCRIPTOR, SECURITY_ATTRIBUTES, TOKEN_QUERY, TOKEN_USER, TokenUser,
    };
    use windows_sys::Win32::Storage::FileSystem::{
        CREATE_NEW, CreateDirectoryW, CreateFileW, FILE_ATTRIBUTE_NORMAL, FILE_SHARE_DELETE,
        FILE_SHARE_READ, FILE_SHARE_WRITE,
    };
    use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};

    use super::{AceEntry, AceType};

    const ACCESS_ALLOWED_ACE_TYPE: u8 = 0;
    const ACCESS_DENIED_ACE_TYPE: u8 = 1;

    fn wide(s: &std::ffi::OsStr) -> Vec<u16> {
        s.encode_wide().chain(Some(0)).collect()
    }

    /// Frees memory the system allocated with LocalAlloc when dropped.
    struct Local(*mut c_void);
    impl Drop for Local {
        fn drop(&mut self) {
            if !self.0.is_null() {
                // SAFETY: the pointer came from an API documented to allocate with LocalAlloc,
                // and is freed once.
                unsafe { LocalFree(self.0) };
            }
        }
    }

    /// Reads a NUL-terminated UTF-16 string the system allocated, and frees it.
    fn take_wide(p: *mut u16) -> String {
        let _free = Local(p.cast());
        let mut len = 0;
        // SAFETY: `p` is a NUL-terminated string returned by ConvertSidToStringSidW.
        unsafe {
            while *p.add(len) != 0 {
                len += 1;
            }
            String::from_utf16_lossy(std::slice::from_raw_parts(p, len))
        }
    }

    fn sid_string(sid: *mut c_void) -> io::Result<String> {
        let mut out: *mut u16 = null_mut();
        // SAFETY: `sid` points to a valid SID inside a live ACL or token buffer.
        if unsafe { ConvertSidToStringSidW(sid, &mut out) } == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(take_wide(out))
    }

    /// The DACL of `path`: `None` for a NULL DACL.
    pub fn read_dacl(path: &Path) -> io::Result<Option<Vec<AceEntry>>> {
        let name = wide(path.as_os_str());
        let mut dacl: *mut ACL = null_mut();
        let mut sd: PSECURITY_DESCRIPTOR = null_mut();
        // SAFETY: out-pointers are valid; `dacl` points into `sd`, which `_sd` frees after use.
        let rc = unsafe {
            GetNamedSecurityInfoW(
                name.as_ptr(),
                SE_FILE_OBJECT,
                DACL_SECURITY_INFORMATION,
                null_mut(),
                null_mut(),
                &mut dacl,
                null_mut(),
                &mut sd,
            )
        };
        if rc != ERROR_SUCCESS {
            return Err(io::Error::from_raw_os_error(rc as i32));
        }
        let _sd = Local(sd);
        if dacl.is_null() {
            return Ok(None);
        }
        // SAFETY: a non-null DACL returned above, alive while `_sd` is.
        let count = unsafe { (*dacl).AceCount };
        let mut entries = Vec::with_capacity(usize::from(count));
        for i in 0..u32::from(count) {
            let mut ace: *mut c_void = null_mut();
            // SAFETY: `i` is below the ACL's AceCount.
            if unsafe { GetAce(dacl, i, &mut ace) } == 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: every ACE starts with an ACE_HEADER.
            let header = unsafe { &*(ace as *const ACE_HEADER) };
            let ace_type = match header.AceType {
                ACCESS_ALLOWED_ACE_TYPE => AceType::Allow,
                ACCESS_DENIED_ACE_TYPE => AceType::Deny,
                other => {
                    entries.push(AceEntry {
                        sid: String::new(),
                        ace_type: AceType::Other(other),
                        mask: 0,
                    });
                    continue;
                }
            };
            // ACCESS_ALLOWED_ACE and ACCESS_DENIED_ACE: header (4 bytes), mask (u32), then the
            // SID in place of the SidStart field.
            // SAFETY: both ACE types have this layout; the SID lies inside the ACE.
            let (mask, sid) = unsafe {
                let base = ace.cast::<u8>();
                let mask = std::ptr::read_unaligned(base.add(4).cast::<u32>());
                (mask, base.add(8).cast::<c_void>())
            };
            entries.push(AceEntry {
                sid: sid_string(sid)?,
                ace_type,
                mask,
            });
        }
        Ok(Some(entries))
    }

    /// The SID of the account this process runs as.
    fn process_user_sid() -> io::Result<String> {
        let mut token: HANDLE = null_mut();
        // SAFETY: GetCurrentProcess returns a pseudo-handle; `token` is an out-pointer.
        if unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) } == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `token` is a handle we own.
        let _token = unsafe { OwnedHandle::from_raw_handle(token) };
        let mut len = 0u32;
        // SAFETY: a size query (null buffer, zero length); fails with the needed length.
        unsafe { GetTokenInformation(token, TokenUser, null_mut(), 0, &mut len) };
        // u64 elements: TOKEN_USER holds pointers and needs their alignment.
        let mut buf = vec![0u64; (len as usize).div_ceil(8).max(1)];
        // SAFETY: `buf` holds at least `len` bytes.
        if unsafe { GetTokenInformation(token, TokenUser, buf.as_mut_ptr().cast(), len, &mut len) }
            == 0
        {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the call filled `buf` with a TOKEN_USER whose SID lies inside `buf`.
        let sid = unsafe { (*(buf.as_ptr().cast::<TOKEN_USER>())).User.Sid };
        sid_string(sid)
    }

    /// A self-relative security descriptor: owner-only DACL, protected from inheritance.
    /// `inherit`: for a directory, so what is created in it gets the same DACL.
    fn private_descriptor(inherit: bool) -> io::Result<Local> {
        let user = process_user_sid()?;
        let flags = if inherit { "OICI" } else { "" };
        descriptor(&format!(
            "D:P(A;{flags};FA;;;{user})(A;{flags};FA;;;SY)(A;{flags};FA;;;BA)"
        ))
    }

    fn descriptor(sddl: &str) -> io::Result<Local> {
        let sddl = wide(std::ffi::OsStr::new(sddl));
        let mut sd: PSECURITY_DESCRIPTOR = null_mut();
        // SAFETY: `sddl` is NUL-terminated; `sd` receives a LocalAlloc'd descriptor.
        let ok = unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                sddl.as_ptr(),
                SDDL_REVISION_1,
                &mut sd,
                null_mut(),
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Local(sd))
    }

    fn attributes(sd: &Local) -> SECURITY_ATTRIBUTES {
        SECURITY_ATTRIBUTES {
            nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
            lpSecurityDescriptor: sd.0,
            bInheritHandle: 0,
        }
    }

    /// Creates the new file `path` (it must not exist) for reading and writing, with the
    /// owner-only DACL from its first moment.
    pub fn create_file_private(path: &Path) -> io::Result<File> {
        create_file_with(path, private_descriptor(false)?)
    }

    /// Tests: a file with any DACL (SDDL), to check that the check refuses it.
    #[cfg(test)]
    pub fn create_file_with_sddl(path: &Path, sddl: &str) -> io::Result<File> {
        create_file_with(path, descriptor(sddl)?)
    }

    fn create_file_with(path: &Path, sd: Local) -> io::Result<File> {
        let sa = attributes(&sd);
        let name = wide(path.as_os_str());
        // SAFETY: valid NUL-terminated name and security attributes that outlive the call.
        let handle = unsafe {
            CreateFileW(
                name.as_ptr(),
                GENERIC_READ | GENERIC_WRITE,
                FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
                &sa,
                CREATE_NEW,
                FILE_ATTRIBUTE_NORMAL,
                null_mut(),
            )
        };
        if handle == INVALID_HANDLE_VALUE {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh handle we own from here on.
        Ok(File::from(unsafe { OwnedHandle::from_raw_handle(handle) }))
    }

    /// Creates the directory `path` (its parent must exist) with the owner-only DACL, inherited
    /// by everything later created in it.
    pub fn create_dir_private(path: &Path) -> io::Result<()> {
        let sd = private_descriptor(true)?;
        let sa = attributes(&sd);
        let name = wide(path.as_os_str());
        // SAFETY: as in create_file_private.
        if unsafe { CreateDirectoryW(name.as_ptr(), &sa) } == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(all(test, windows))]
#[allow(clippy::unwrap_used)]
mod windows_tests {
    //! The real check under Wine (ops/windows/unit-tests.sh): Wine keeps the security
    //! descriptor a file was created with (entries for the account, SYSTEM, Administrators and
    //! Everyone) and returns it from GetNamedSecurityInfoW, so a KEK readable
    //! by Everyone can be expressed there and must be refused.
    use super::*;

    #[test]
    fn a_private_file_passes_and_an_everyone_readable_one_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let private = root.path().join("private.kek");
        drop(create_file_private(&private).unwrap());
        assert_eq!(refusal(&private).unwrap(), None);
        // Creating over an existing file fails: the DACL must never be the old file's.
        assert!(create_file_private(&private).is_err());

        let open = root.path().join("open.kek");
        drop(windows::create_file_with_sddl(&open, "D:P(A;;FA;;;SY)(A;;FR;;;WD)").unwrap());
        assert!(
            matches!(
                refusal(&open).unwrap(),
                Some(AclRefusal::Broad {
                    who: "Everyone",
                    ..
                })
            ),
            "{:?}",
            read_dacl(&open)
        );
        // Not here: Users, Authenticated Users and a NULL DACL. Wine cannot express them on a
        // file (it stores an entry for BUILTIN\Users as one for the current account, and
        // replaces a NULL DACL by one of its own), so the tests of `check_dacl` above cover
        // them, on every platform.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(sid: &str, mask: u32) -> AceEntry {
        AceEntry {
            sid: sid.to_owned(),
            ace_type: AceType::Allow,
            mask,
        }
    }

    /// The DACL `create_file_private` writes: the account, SYSTEM, Administrators (FA = 0x1f01ff).
    fn private() -> Vec<AceEntry> {
        vec![
            allow("S-1-5-21-1-2-3-1001", 0x001f_01ff),
            allow(LOCAL_SYSTEM, 0x001f_01ff),
            allow(ADMINISTRATORS, 0x001f_01ff),
        ]
    }

    #[test]
    fn owner_system_and_administrators_only_is_accepted() {
        assert_eq!(check_dacl(Some(&private())), Ok(()));
        // An empty DACL admits no one (the owner keeps READ_CONTROL/WRITE_DAC only).
        assert_eq!(check_dacl(Some(&[])), Ok(()));
    }

    #[test]
    fn a_null_dacl_is_refused() {
        assert_eq!(check_dacl(None), Err(AclRefusal::NoDacl));
    }

    #[test]
    fn broad_groups_with_read_are_refused() {
        for (sid, who) in [
            (EVERYONE, "Everyone"),
            (USERS, "Users"),
            (AUTHENTICATED_USERS, "Authenticated Users"),
            (GUESTS, "Guests"),
            (ANONYMOUS_LOGON, "Anonymous Logon"),
        ] {
            // FILE_GENERIC_READ (0x120089), what `icacls /grant Everyone:R` writes.
            let mut dacl = private();
            dacl.push(allow(sid, 0x0012_0089));
            assert_eq!(
                check_dacl(Some(&dacl)),
                Err(AclRefusal::Broad {
                    who,
                    mask: 0x0012_0089
                }),
                "{sid}"
            );
            for mask in [
                GENERIC_READ,
                GENERIC_ALL,
                FILE_WRITE_DATA,
                WRITE_DAC,
                DELETE,
            ] {
                let dacl = [allow(sid, mask)];
                assert!(check_dacl(Some(&dacl)).is_err(), "{sid} {mask:#x}");
            }
        }
    }

    #[test]
    fn harmless_rights_and_deny_entries_are_accepted() {
        let mut dacl = private();
        // FILE_READ_ATTRIBUTES | SYNCHRONIZE: reveals nothing of the content.
        dacl.push(allow(EVERYONE, 0x0010_0080));
        dacl.push(AceEntry {
            sid: USERS.to_owned(),
            ace_type: AceType::Deny,
            mask: GENERIC_ALL,
        });
        assert_eq!(check_dacl(Some(&dacl)), Ok(()));
    }

    #[test]
    fn named_accounts_are_the_administrators_choice_but_unknown_aces_are_refused() {
        let mut dacl = private();
        dacl.push(allow("S-1-5-21-1-2-3-1002", GENERIC_READ));
        assert_eq!(check_dacl(Some(&dacl)), Ok(()));
        dacl.push(AceEntry {
            sid: String::new(),
            ace_type: AceType::Other(9),
            mask: 0,
        });
        assert_eq!(check_dacl(Some(&dacl)), Err(AclRefusal::UnknownAce(9)));
    }

    #[test]
    fn the_remedy_is_owner_only_and_inherited_for_a_directory() {
        let dir = AclRefusal::remedy(&r"C:\ProgramData\Conclave\data", true);
        assert!(dir.contains("/inheritance:r"), "{dir}");
        assert!(dir.contains("SYSTEM:(OI)(CI)F"), "{dir}");
        let file = AclRefusal::remedy(&"conclave.kek", false);
        assert!(file.contains("Administrators:F"), "{file}");
        assert!(
            !file.contains("Everyone") && !file.contains("Users"),
            "{file}"
        );
    }

    #[test]
    fn sids_are_classified() {
        assert_eq!(sid_kind("S-1-1-0"), SidKind::Broad("Everyone"));
        assert_eq!(sid_kind("S-1-5-32-544"), SidKind::Trusted);
        assert_eq!(sid_kind("S-1-5-18"), SidKind::Trusted);
        assert_eq!(sid_kind("S-1-5-21-1-2-3-500"), SidKind::Account);
    }
}
