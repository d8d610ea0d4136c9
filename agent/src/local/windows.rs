//! The local endpoint on Windows: a named pipe, `\\.\pipe\deskpulse-agent-`
//! and a hash of the canonical state dir (`super::pipe_name`).
//!
//! - **Who may connect.** Remote clients are rejected. The pipe's DACL lets
//!   every authenticated local user read and write it, so employees can
//!   report issues, but not create instances of it; only SYSTEM,
//!   Administrators and the service's own account may. With the default
//!   DACL, users other than the service's could only read. Anonymous
//!   callers get nothing.
//! - **Who owns the name.** The first instance is created with
//!   `first_pipe_instance`, so the service fails to start its endpoint
//!   rather than join a pipe some other process made. It keeps one instance
//!   listening at all times, and the next instance is open before the
//!   connected one is handed on, so the name is never free to be taken.
//! - **Who is asking.** The service impersonates the client just long
//!   enough to open the token the client connected with, and names its
//!   user `DOMAIN\user`. Impersonation, rather than the client's process
//!   id, names the identity the pipe itself saw: a process id can be
//!   reused once its process exits, and opening another user's process
//!   needs rights a service run as a plain user does not have. Clients
//!   connect at the identification level, so the service can read who they
//!   are but cannot act as them.

use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::path::Path;
use std::time::Duration;

use tokio::net::windows::named_pipe::{
    ClientOptions, NamedPipeClient, NamedPipeServer, ServerOptions,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use windows_sys::Win32::Foundation::{
    ERROR_ACCESS_DENIED, ERROR_INSUFFICIENT_BUFFER, ERROR_PIPE_BUSY, HANDLE, LocalFree,
};
use windows_sys::Win32::Security::Authorization::{
    ConvertSidToStringSidW, ConvertStringSecurityDescriptorToSecurityDescriptorW, GetSecurityInfo,
    SDDL_REVISION_1, SE_FILE_OBJECT, SetNamedSecurityInfoW,
};
use windows_sys::Win32::Security::{
    ACL, DACL_SECURITY_INFORMATION, GetSecurityDescriptorDacl, GetTokenInformation,
    LookupAccountSidW, OWNER_SECURITY_INFORMATION, PROTECTED_DACL_SECURITY_INFORMATION,
    PSECURITY_DESCRIPTOR, PSID, RevertToSelf, SECURITY_ATTRIBUTES, TOKEN_QUERY, TOKEN_USER,
    TokenUser,
};
use windows_sys::Win32::Storage::FileSystem::{
    FILE_ADD_FILE, FILE_CREATE_PIPE_INSTANCE, FILE_GENERIC_READ, FILE_GENERIC_WRITE,
    FILE_LIST_DIRECTORY, FILE_READ_ATTRIBUTES, FILE_TRAVERSE, READ_CONTROL,
    SECURITY_IDENTIFICATION, SYNCHRONIZE,
};
use windows_sys::Win32::System::Pipes::ImpersonateNamedPipeClient;
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, GetCurrentThread, OpenProcessToken, OpenThreadToken,
};

use super::{Endpoint, Service};

/// What a local user may do with the pipe: read and write, but not create
/// an instance (for pipes, `FILE_CREATE_PIPE_INSTANCE` is the append right
/// inside `FILE_GENERIC_WRITE`).
const LOCAL_USER_ACCESS: u32 =
    (FILE_GENERIC_READ | FILE_GENERIC_WRITE) & !FILE_CREATE_PIPE_INSTANCE;
/// How often a client tries again while every instance is taken.
const BUSY_RETRY: Duration = Duration::from_millis(20);
/// How often the service tries again to open a listening instance.
const CREATE_RETRY: Duration = Duration::from_millis(200);

/// The state dir as the pipe name is derived from it: canonical when it
/// exists (so `C:\ProgramData\Deskpulse` and `c:\programdata\deskpulse\.`
/// meet), else absolute.
pub(super) fn state_dir_key(root: &Path) -> String {
    std::fs::canonicalize(root)
        .or_else(|_| std::path::absolute(root))
        .unwrap_or_else(|_| root.to_path_buf())
        .to_string_lossy()
        .into_owned()
}

/// Serves the pipe until `shutdown`.
pub(super) async fn serve(
    endpoint: &Endpoint,
    service: Service,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let security = PipeSecurity::for_local_users()?;
    let name = endpoint.address();
    let mut listening = security.create(name, true).map_err(|error| {
        if error.raw_os_error() == Some(ERROR_ACCESS_DENIED as i32) {
            io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("another process already holds the pipe {endpoint}"),
            )
        } else {
            error
        }
    })?;
    loop {
        let connected = tokio::select! {
            () = shutdown.cancelled() => break,
            connected = listening.connect() => connected,
        };
        // The connected instance still holds the name while the next one
        // opens. Should that fail (every instance taken by clients not yet
        // timed out), the connected client waits until one frees.
        let next = loop {
            match security.create(name, false) {
                Ok(next) => break next,
                Err(error) => {
                    warn!(%error, pipe = %endpoint, "cannot open another instance of the local pipe; trying again");
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        () = tokio::time::sleep(CREATE_RETRY) => {}
                    }
                }
            }
        };
        let mut client = std::mem::replace(&mut listening, next);
        match connected {
            Ok(()) => {
                let service = service.clone();
                tokio::spawn(async move {
                    if let Err(error) = super::answer(&mut client, &service, client_user).await {
                        debug!(%error, "local pipe client failed");
                    }
                });
            }
            Err(error) => debug!(%error, "a local pipe client failed to connect"),
        }
    }
    Ok(())
}

/// Opens the pipe; `Ok(None)` when no service listens there. Waits up to
/// `timeout` while every instance is taken.
pub(super) async fn connect(
    endpoint: &Endpoint,
    timeout: Duration,
) -> io::Result<Option<NamedPipeClient>> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match ClientOptions::new()
            .security_qos_flags(SECURITY_IDENTIFICATION)
            .open(endpoint.address())
        {
            Ok(client) => return Ok(Some(client)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            // Between a client connecting and the service opening the next
            // instance, none listens for a moment.
            Err(error)
                if error.raw_os_error() == Some(ERROR_PIPE_BUSY as i32)
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(BUSY_RETRY).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// The user this process runs as, `DOMAIN\user`: the reporter when
/// `report-issue` spools a report itself, named as the pipe would name it.
pub fn current_user() -> io::Result<String> {
    let sid = TokenUserSid::of(&process_token()?)?;
    account_name(&sid).or_else(|_| sid_string(&sid))
}

/// The pipe client's account, `DOMAIN\user` (its SID when the account has
/// no name); `None`, logged, when it cannot be told.
fn client_user(pipe: &NamedPipeServer) -> Option<String> {
    let named = client_token(pipe)
        .and_then(|token| TokenUserSid::of(&token))
        .and_then(|sid| account_name(&sid).or_else(|_| sid_string(&sid)));
    match named {
        Ok(user) => Some(user),
        Err(error) => {
            debug!(%error, "cannot tell who the local pipe client is");
            None
        }
    }
}

/// The token the client opened the pipe with.
#[allow(unsafe_code)]
fn client_token(pipe: &NamedPipeServer) -> io::Result<OwnedHandle> {
    let pipe: HANDLE = pipe.as_raw_handle();
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: `pipe` is the handle of a connected instance, borrowed for
    // this call. The impersonation changes only this thread's token and is
    // reverted before this function returns, with no await in between, so
    // no other task ever runs on this thread as the client. `token` is a
    // valid out-pointer; the handle written there is owned by no one else.
    unsafe {
        if ImpersonateNamedPipeClient(pipe) == 0 {
            return Err(io::Error::last_os_error());
        }
        // Opened with the service's own rights: an identification-level
        // token cannot open itself.
        let opened = OpenThreadToken(GetCurrentThread(), TOKEN_QUERY, 1, &mut token);
        let open_error = io::Error::last_os_error();
        if RevertToSelf() == 0 {
            // The thread would go on as the client; Windows' documented
            // answer is to end the process.
            std::process::abort();
        }
        if opened == 0 {
            return Err(open_error);
        }
        Ok(OwnedHandle::from_raw_handle(token))
    }
}

/// This process's own token.
#[allow(unsafe_code)]
fn process_token() -> io::Result<OwnedHandle> {
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: GetCurrentProcess returns a pseudo-handle that needs no
    // closing; `token` is a valid out-pointer and the handle written there
    // is owned by no one else.
    unsafe {
        if OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedHandle::from_raw_handle(token))
    }
}

/// A token's `TOKEN_USER`: the user's SID, stored in the same buffer.
struct TokenUserSid {
    /// u64s, so the buffer is aligned for `TOKEN_USER`.
    buffer: Vec<u64>,
}

impl TokenUserSid {
    #[allow(unsafe_code)]
    fn of(token: &OwnedHandle) -> io::Result<Self> {
        let token: HANDLE = token.as_raw_handle();
        let mut needed = 0u32;
        // SAFETY: a size query: no buffer, and `needed` is a valid
        // out-pointer. It fails by design with ERROR_INSUFFICIENT_BUFFER.
        unsafe { GetTokenInformation(token, TokenUser, std::ptr::null_mut(), 0, &mut needed) };
        let bytes = (needed as usize).max(size_of::<TOKEN_USER>());
        let mut buffer = vec![0u64; bytes.div_ceil(size_of::<u64>())];
        // SAFETY: `buffer` holds at least `needed` bytes, aligned for
        // TOKEN_USER, and `needed` is a valid out-pointer.
        let filled = unsafe {
            GetTokenInformation(
                token,
                TokenUser,
                buffer.as_mut_ptr().cast(),
                needed,
                &mut needed,
            )
        };
        if filled == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { buffer })
    }

    /// The SID, pointing into the buffer: valid while `self` is.
    #[allow(unsafe_code)]
    fn sid(&self) -> PSID {
        // SAFETY: GetTokenInformation filled the buffer, which is aligned
        // for and at least as large as TOKEN_USER, with a TOKEN_USER.
        unsafe { (*self.buffer.as_ptr().cast::<TOKEN_USER>()).User.Sid }
    }
}

/// Something that holds a SID and keeps it valid while it lives.
trait Sid {
    /// The SID, valid while `self` is.
    fn sid(&self) -> PSID;
}

impl Sid for TokenUserSid {
    fn sid(&self) -> PSID {
        TokenUserSid::sid(self)
    }
}

/// A file's owner SID, inside the security descriptor that holds it.
struct FileOwnerSid {
    owner: PSID,
    descriptor: PSECURITY_DESCRIPTOR,
}

impl FileOwnerSid {
    #[allow(unsafe_code)]
    fn of(file: &std::fs::File) -> io::Result<Self> {
        let mut owner: PSID = std::ptr::null_mut();
        let mut descriptor: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
        // SAFETY: the handle is the open file's, borrowed for this call;
        // `owner` and `descriptor` are valid out-pointers, and the other
        // parts are not asked for (null). On success `owner` points into
        // `descriptor`, which `Drop` frees once with LocalFree.
        let status = unsafe {
            GetSecurityInfo(
                file.as_raw_handle(),
                SE_FILE_OBJECT,
                OWNER_SECURITY_INFORMATION,
                &mut owner,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                &mut descriptor,
            )
        };
        if status != 0 {
            return Err(io::Error::from_raw_os_error(status as i32));
        }
        Ok(Self { owner, descriptor })
    }
}

impl Sid for FileOwnerSid {
    fn sid(&self) -> PSID {
        self.owner
    }
}

impl Drop for FileOwnerSid {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: GetSecurityInfo allocated the descriptor for us; it is
        // freed here once, and `owner`, which points into it, dies with it.
        unsafe { LocalFree(self.descriptor) };
    }
}

/// The owner of an open file, `DOMAIN\user` (its SID when the account has
/// no name): who wrote a report into the drop box.
pub fn file_owner(file: &std::fs::File) -> io::Result<String> {
    let sid = FileOwnerSid::of(file)?;
    account_name(&sid).or_else(|_| sid_string(&sid))
}

/// The account a SID names, `DOMAIN\user`, or `user` when it has no domain.
#[allow(unsafe_code)]
fn account_name(sid: &impl Sid) -> io::Result<String> {
    let mut name = vec![0u16; 256];
    let mut domain = vec![0u16; 256];
    // Two tries: the first failure reports the sizes needed.
    for _ in 0..2 {
        let mut name_len = u32::try_from(name.len()).unwrap_or(u32::MAX);
        let mut domain_len = u32::try_from(domain.len()).unwrap_or(u32::MAX);
        let mut kind = 0;
        // SAFETY: the SID is valid while `sid` lives; both buffers hold as
        // many u16s as their lengths say; every out-pointer is valid.
        let found = unsafe {
            LookupAccountSidW(
                std::ptr::null(),
                sid.sid(),
                name.as_mut_ptr(),
                &mut name_len,
                domain.as_mut_ptr(),
                &mut domain_len,
                &mut kind,
            )
        };
        if found != 0 {
            let name = String::from_utf16_lossy(name.get(..name_len as usize).unwrap_or_default());
            let domain =
                String::from_utf16_lossy(domain.get(..domain_len as usize).unwrap_or_default());
            return Ok(if domain.is_empty() {
                name
            } else {
                format!(r"{domain}\{name}")
            });
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(ERROR_INSUFFICIENT_BUFFER as i32) {
            return Err(error);
        }
        name.resize((name_len as usize).max(name.len()), 0);
        domain.resize((domain_len as usize).max(domain.len()), 0);
    }
    Err(io::Error::other("the account name does not fit"))
}

/// A SID as text, `S-1-5-…`.
#[allow(unsafe_code)]
fn sid_string(sid: &impl Sid) -> io::Result<String> {
    let mut text: *mut u16 = std::ptr::null_mut();
    // SAFETY: the SID is valid while `sid` lives and `text` is a valid
    // out-pointer. On success `text` is a NUL-terminated string that this
    // function reads up to its NUL and then frees with LocalFree, once.
    unsafe {
        if ConvertSidToStringSidW(sid.sid(), &mut text) == 0 {
            return Err(io::Error::last_os_error());
        }
        let len = (0..).take_while(|&i| *text.add(i) != 0).count();
        let string = String::from_utf16_lossy(std::slice::from_raw_parts(text, len));
        LocalFree(text.cast());
        Ok(string)
    }
}

/// The pipe's security descriptor (self-relative, so it can be copied
/// into memory of our own).
struct PipeSecurity {
    /// u64s, so the buffer is aligned for a security descriptor.
    descriptor: Vec<u64>,
}

impl PipeSecurity {
    /// Full control for SYSTEM, Administrators and the service's own
    /// account (which must create further instances); read and write for
    /// authenticated users; nothing inherited (`P`).
    fn for_local_users() -> io::Result<Self> {
        let own = sid_string(&TokenUserSid::of(&process_token()?)?)?;
        let sddl =
            format!("D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;GA;;;{own})(A;;{LOCAL_USER_ACCESS:#x};;;AU)");
        Ok(Self {
            descriptor: security_descriptor(&sddl)?,
        })
    }

    /// Opens an instance of the pipe `name`; `first` when no instance may
    /// exist yet.
    #[allow(unsafe_code)]
    fn create(&self, name: &Path, first: bool) -> io::Result<NamedPipeServer> {
        let mut options = ServerOptions::new();
        options
            .first_pipe_instance(first)
            .reject_remote_clients(true);
        let mut attributes = SECURITY_ATTRIBUTES {
            nLength: u32::try_from(size_of::<SECURITY_ATTRIBUTES>()).unwrap_or(u32::MAX),
            // CreateNamedPipeW only reads the descriptor.
            lpSecurityDescriptor: self.descriptor.as_ptr().cast_mut().cast(),
            bInheritHandle: 0,
        };
        // SAFETY: `attributes` is a valid SECURITY_ATTRIBUTES that lives
        // across the call, and its descriptor is a valid self-relative
        // security descriptor that `self` owns.
        unsafe { options.create_with_security_attributes_raw(name, (&raw mut attributes).cast()) }
    }
}

/// Makes the state dir at `root` the service's alone, as the Unix modes do
/// there: a protected DACL (nothing inherited from `%ProgramData%`, whose
/// ACL lets users read and add files) with full control for SYSTEM and
/// Administrators, inherited by everything in it. The report drop box gets
/// its own protected DACL first: local users may list it and add a report,
/// and each has full control of the reports they created (CREATOR OWNER)
/// and nothing of anyone else's.
pub fn protect_state_dir(root: &Path) -> io::Result<()> {
    let dropbox = root.join(crate::issue::dropbox::DIR);
    if dropbox.is_dir() {
        set_protected_dacl(
            &dropbox,
            &format!(
                "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;;{DROPBOX_USER_ACCESS:#x};;;AU)(A;OICIIO;FA;;;CO)"
            ),
        )?;
    }
    set_protected_dacl(root, "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)")
}

/// What a local user may do in the drop box: list it, add a file, and read
/// its attributes and security (to see who owns a report).
const DROPBOX_USER_ACCESS: u32 = FILE_LIST_DIRECTORY
    | FILE_ADD_FILE
    | FILE_TRAVERSE
    | FILE_READ_ATTRIBUTES
    | READ_CONTROL
    | SYNCHRONIZE;

/// Replaces the DACL of `path` with the one in `sddl`, marked protected, and
/// lets Windows pass its inheritable entries on to what is inside.
#[allow(unsafe_code)]
fn set_protected_dacl(path: &Path, sddl: &str) -> io::Result<()> {
    use std::os::windows::ffi::OsStrExt;
    let descriptor = security_descriptor(sddl)?;
    let wide: Vec<u16> = path
        .as_os_str()
        .encode_wide()
        .chain(std::iter::once(0))
        .collect();
    let mut present = 0;
    let mut defaulted = 0;
    let mut dacl: *mut ACL = std::ptr::null_mut();
    // SAFETY: `descriptor` is a valid self-relative security descriptor
    // that outlives both calls; `dacl` then points inside it. `wide` is
    // NUL-terminated. SetNamedSecurityInfoW only reads the DACL.
    unsafe {
        if GetSecurityDescriptorDacl(
            descriptor.as_ptr().cast_mut().cast(),
            &mut present,
            &mut dacl,
            &mut defaulted,
        ) == 0
        {
            return Err(io::Error::last_os_error());
        }
        let status = SetNamedSecurityInfoW(
            wide.as_ptr(),
            SE_FILE_OBJECT,
            DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            dacl,
            std::ptr::null(),
        );
        if status != 0 {
            return Err(io::Error::from_raw_os_error(status as i32));
        }
    }
    Ok(())
}

/// A self-relative security descriptor built from SDDL.
#[allow(unsafe_code)]
fn security_descriptor(sddl: &str) -> io::Result<Vec<u64>> {
    let wide: Vec<u16> = sddl.encode_utf16().chain(std::iter::once(0)).collect();
    let mut descriptor: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    let mut size = 0u32;
    // SAFETY: `wide` is NUL-terminated and both out-pointers are valid. On
    // success `descriptor` points at `size` bytes of a self-relative
    // descriptor (offsets, no pointers, so a copy stays valid), which are
    // copied into a buffer at least as large and then freed, once.
    unsafe {
        if ConvertStringSecurityDescriptorToSecurityDescriptorW(
            wide.as_ptr(),
            SDDL_REVISION_1,
            &mut descriptor,
            &mut size,
        ) == 0
        {
            return Err(io::Error::last_os_error());
        }
        let mut copy = vec![0u64; (size as usize).div_ceil(size_of::<u64>())];
        std::ptr::copy_nonoverlapping(
            descriptor.cast::<u8>(),
            copy.as_mut_ptr().cast::<u8>(),
            size as usize,
        );
        LocalFree(descriptor);
        Ok(copy)
    }
}

#[cfg(test)]
mod tests;
