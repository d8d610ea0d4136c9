//! How many Windows updates wait (issue 21): the Windows Update Agent's
//! own search, `IUpdateSearcher::Search("IsInstalled=0 and IsHidden=0")`,
//! over COM in the agent's process. `Online` is off, so the search reads
//! what Windows' last automatic scan left in the PC's update cache and
//! never reaches the network or starts a scan. Even so a search takes
//! seconds, so one count is kept for [`KEEP`] and shared by inventories
//! and posture samples (D24); a failure is kept as long, so a PC without
//! the agent (Wine, a stripped image) is not asked every minute.
//!
//! Only the COM calls are Windows-only; what a failure means is plain code,
//! tested on every OS.

use super::snapshot::Failure;

/// How long a count (or the reason there is none) is kept. Windows scans
/// for updates about once a day, so an hour-old count is current enough
/// for a help desk and costs one search an hour.
pub const KEEP: std::time::Duration = std::time::Duration::from_secs(3600);

/// The failure an HRESULT from the Windows Update Agent stands for, with
/// its number for a search.
pub fn failure_of(hresult: i32) -> (Failure, String) {
    let (failure, words) = match hresult as u32 {
        0x8004_0154 /* REGDB_E_CLASSNOTREG */ => (
            Failure::NotPresent,
            "the Windows Update Agent is not installed here",
        ),
        // Wine's stub of the agent, for one.
        0x8000_4001 /* E_NOTIMPL */ => (
            Failure::NotSupported,
            "the Windows Update Agent here cannot search",
        ),
        0x8007_0005 /* E_ACCESSDENIED */ => (
            Failure::NotPermitted,
            "the Windows Update Agent refused the search (access denied)",
        ),
        0x8024_0438 | 0x8024_402C /* WU_E_PT_ENDPOINT_UNREACHABLE, WINHTTP name */ => (
            Failure::Failed,
            "Windows Update's cache asked for the network",
        ),
        0x8024_0000..=0x8024_FFFF => (Failure::Failed, "Windows Update's search failed"),
        _ => (Failure::Failed, "the Windows Update Agent failed"),
    };
    (
        failure,
        format!("{words} (HRESULT {:#010X})", hresult as u32),
    )
}

#[cfg(windows)]
pub use native::pending;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_update_agent_is_not_present_and_others_say_their_number() {
        let (failure, detail) = failure_of(0x8004_0154_u32 as i32);
        assert_eq!(failure, Failure::NotPresent);
        assert_eq!(
            detail,
            "the Windows Update Agent is not installed here (HRESULT 0x80040154)"
        );
        assert_eq!(failure_of(0x8007_0005_u32 as i32).0, Failure::NotPermitted);
        assert_eq!(failure_of(0x8000_4001_u32 as i32).0, Failure::NotSupported);
        let (failure, detail) = failure_of(0x8024_4022_u32 as i32);
        assert_eq!(failure, Failure::Failed);
        assert!(detail.ends_with("(HRESULT 0x80244022)"), "{detail}");
    }
}

#[cfg(windows)]
mod native {
    use std::sync::Mutex;
    use std::time::Instant;

    use windows::Win32::Foundation::{CO_E_NOTINITIALIZED, VARIANT_FALSE};
    use windows::Win32::System::Com::{
        CLSCTX_INPROC_SERVER, CLSCTX_LOCAL_SERVER, CoCreateInstance, CoIncrementMTAUsage,
    };
    use windows::Win32::System::UpdateAgent::{
        IUpdateSession, UpdateSession, orcSucceeded, orcSucceededWithErrors,
    };
    use windows::core::BSTR;

    use super::{Failure, KEEP, failure_of};

    type Count = Result<u32, (Failure, String)>;

    static KEPT: Mutex<Option<(Instant, Count)>> = Mutex::new(None);

    /// The number of updates Windows Update knows to be missing and not
    /// hidden, or why there is none; kept for [`KEEP`].
    pub fn pending() -> Count {
        let mut kept = KEPT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((at, count)) = kept.as_ref()
            && at.elapsed() < KEEP
        {
            return count.clone();
        }
        let count = search();
        *kept = Some((Instant::now(), count.clone()));
        count
    }

    // The windows crate's COM methods are all `unsafe`.
    #[allow(unsafe_code)]
    fn search() -> Count {
        let failed = |error: windows::core::Error| failure_of(error.code().0);
        let context = CLSCTX_INPROC_SERVER | CLSCTX_LOCAL_SERVER;
        // SAFETY: plain COM calls on interfaces the calls themselves
        // returned; the process is in the MTA (the wmi crate joins it, and
        // so does this when it comes first), where these objects may be
        // used from any thread.
        unsafe {
            let session: IUpdateSession = match CoCreateInstance(&UpdateSession, None, context) {
                Err(error) if error.code() == CO_E_NOTINITIALIZED => {
                    CoIncrementMTAUsage().map_err(failed)?;
                    CoCreateInstance(&UpdateSession, None, context).map_err(failed)?
                }
                session => session.map_err(failed)?,
            };
            let searcher = session.CreateUpdateSearcher().map_err(failed)?;
            searcher.SetOnline(VARIANT_FALSE).map_err(failed)?;
            let result = searcher
                .Search(&BSTR::from("IsInstalled=0 and IsHidden=0"))
                .map_err(failed)?;
            // "Succeeded with errors" still lists what it found.
            let code = result.ResultCode().map_err(failed)?;
            if code != orcSucceeded && code != orcSucceededWithErrors {
                return Err((
                    Failure::Failed,
                    format!("Windows Update's search ended with result code {}", code.0),
                ));
            }
            let count = result.Updates().and_then(|u| u.Count()).map_err(failed)?;
            Ok(u32::try_from(count).unwrap_or(0))
        }
    }
}
