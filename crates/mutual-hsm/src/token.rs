//! A token, logged in once, with a pool of sessions. PKCS#11 sessions are single-threaded, so
//! each concurrent signature takes its own session from the pool and gives it back; the login
//! state belongs to the token (all sessions of the process share it).
//!
//! A token can be reset or pulled out while we run. An operation that fails because its session
//! or login is gone drops the whole pool, finds the token again (it may come back in another
//! slot), logs in again and retries once; if that fails too, the caller gets
//! [`HsmError::TokenUnavailable`] and keeps whatever it had.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use crate::uri::Pkcs11Uri;
use crate::{module, HsmError, PIN_ENV};

/// Sessions kept open per token when idle: enough for every thread of the process to sign at
/// once (tokio's workers plus blocking threads), so a busy proxy never opens one per signature.
fn pool_size() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()) * 8
}

struct State {
    slot: Slot,
    idle: Vec<Session>,
    /// Whether a session of ours is logged in (login state is per token, shared by all of the
    /// application's sessions), so that a new session needs no C_Login, which is slow on
    /// tokens that derive a key from the PIN.
    logged_in: bool,
}

/// A logged-in token.
pub struct Token {
    ctx: Arc<Pkcs11>,
    module: PathBuf,
    selector: Pkcs11Uri,
    label: String,
    pin: Option<AuthPin>,
    state: Mutex<State>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("module", &self.module)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

static TOKENS: Mutex<Vec<Arc<Token>>> = Mutex::new(Vec::new());

fn read_pin(pin_file: Option<&Path>) -> Result<Option<AuthPin>, HsmError> {
    if let Some(p) = pin_file {
        let text = std::fs::read_to_string(p).map_err(|e| HsmError::PinFile {
            path: p.to_path_buf(),
            detail: e.to_string(),
        })?;
        let line = text.lines().next().unwrap_or("").to_string();
        return Ok(Some(AuthPin::new(line.into())));
    }
    Ok(std::env::var(PIN_ENV)
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| AuthPin::new(v.into())))
}

fn same_token(a: &Pkcs11Uri, b: &Pkcs11Uri) -> bool {
    a.token == b.token
        && a.serial == b.serial
        && a.manufacturer == b.manufacturer
        && a.model == b.model
        && a.slot_id == b.slot_id
}

/// Whether an error means the session or login went away (a token reset or removal), so that
/// a fresh session and login may succeed.
pub(crate) fn is_stale(e: &Error) -> bool {
    matches!(
        e,
        Error::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::DeviceError
                | RvError::ObjectHandleInvalid
                | RvError::KeyHandleInvalid
                | RvError::SlotIdInvalid
                | RvError::CryptokiNotInitialized,
            _
        )
    )
}

impl Token {
    /// Opens (or reuses, per process) the token `uri` selects in `module` and logs in with the
    /// PIN from `pin_file` or `$MUTUAL_PKCS11_PIN`.
    pub fn open(
        module: &Path,
        uri: &Pkcs11Uri,
        pin_file: Option<&Path>,
    ) -> Result<Arc<Token>, HsmError> {
        let ctx = module::load(module)?;
        let pin = read_pin(pin_file)?;
        {
            let tokens = TOKENS.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(t) = tokens
                .iter()
                .find(|t| Arc::ptr_eq(&t.ctx, &ctx) && same_token(&t.selector, uri))
            {
                return Ok(Arc::clone(t));
            }
        }
        let (slot, label) = find_slot(&ctx, module, uri)?;
        let token = Arc::new(Token {
            ctx,
            module: module.to_path_buf(),
            selector: uri.clone(),
            label,
            pin,
            state: Mutex::new(State {
                slot,
                idle: Vec::new(),
                logged_in: false,
            }),
        });
        // Log in now, so a wrong PIN is a start-up error and not a failed handshake later.
        let s = token.new_session(slot, false)?;
        token.give_back(s);
        TOKENS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::clone(&token));
        Ok(token)
    }

    /// The token's label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The module path the token was opened through.
    pub fn module(&self) -> &Path {
        &self.module
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is a slot number and a list of sessions; a panic elsewhere cannot leave it
        // half-changed.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn new_session(&self, slot: Slot, rw: bool) -> Result<Session, HsmError> {
        let s = if rw {
            self.ctx.open_rw_session(slot)
        } else {
            self.ctx.open_ro_session(slot)
        }
        .map_err(|e| self.unavailable(e))?;
        if self.state().logged_in {
            return Ok(s);
        }
        let Some(pin) = &self.pin else {
            return Err(HsmError::NoPin {
                token: self.label.clone(),
            });
        };
        match s.login(UserType::User, Some(pin)) {
            Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                self.state().logged_in = true;
                Ok(s)
            }
            Err(Error::Pkcs11(
                RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange,
                _,
            )) => Err(HsmError::WrongPin {
                token: self.label.clone(),
            }),
            Err(Error::Pkcs11(RvError::PinLocked, _)) => Err(HsmError::PinLocked {
                token: self.label.clone(),
            }),
            Err(e) => Err(self.unavailable(e)),
        }
    }

    pub(crate) fn unavailable(&self, e: Error) -> HsmError {
        HsmError::TokenUnavailable {
            uri: self.selector.to_string(),
            detail: format!("token {:?}: {e}", self.label),
        }
    }

    fn give_back(&self, s: Session) {
        let mut st = self.state();
        if st.idle.len() < pool_size() {
            st.idle.push(s);
        }
    }

    fn take(&self, rw: bool) -> Result<Session, HsmError> {
        let slot = {
            let mut st = self.state();
            if !rw {
                if let Some(s) = st.idle.pop() {
                    return Ok(s);
                }
            }
            st.slot
        };
        self.new_session(slot, rw)
    }

    /// Forgets every session and finds the token again (after a reset or re-insertion).
    fn reset(&self) -> Result<(), HsmError> {
        let (slot, _) = find_slot(&self.ctx, &self.module, &self.selector)?;
        let mut st = self.state();
        st.idle.clear();
        st.slot = slot;
        st.logged_in = false;
        Ok(())
    }

    /// Runs `f` on a pooled session; on a stale session or login, resets and retries once.
    /// `f` gets `true` on the retry (a cached object handle must then be looked up again).
    pub(crate) fn with_session<T>(
        &self,
        rw: bool,
        mut f: impl FnMut(&Session, bool) -> Result<T, Error>,
    ) -> Result<T, SessionError> {
        let s = self.take(rw).map_err(SessionError::Hsm)?;
        match f(&s, false) {
            Ok(v) => {
                self.give_back(s);
                Ok(v)
            }
            Err(e) if is_stale(&e) => {
                drop(s);
                self.reset().map_err(SessionError::Hsm)?;
                let s = self.take(rw).map_err(SessionError::Hsm)?;
                match f(&s, true) {
                    Ok(v) => {
                        self.give_back(s);
                        Ok(v)
                    }
                    Err(e) => Err(SessionError::Pkcs11(e)),
                }
            }
            Err(e) => {
                self.give_back(s);
                Err(SessionError::Pkcs11(e))
            }
        }
    }
}

/// An operation's failure: ours (no token, wrong PIN) or the module's.
pub(crate) enum SessionError {
    Hsm(HsmError),
    Pkcs11(Error),
}

fn find_slot(ctx: &Pkcs11, module: &Path, uri: &Pkcs11Uri) -> Result<(Slot, String), HsmError> {
    let slots = ctx.get_slots_with_token().map_err(|e| HsmError::Pkcs11 {
        op: "C_GetSlotList",
        detail: e.to_string(),
    })?;
    let mut present = Vec::new();
    let mut found = Vec::new();
    for slot in slots {
        let Ok(info) = ctx.get_token_info(slot) else {
            continue;
        };
        let label = info.label().trim().to_string();
        let ok = uri.token.as_deref().is_none_or(|t| t == label)
            && uri
                .serial
                .as_deref()
                .is_none_or(|s| s == info.serial_number().trim())
            && uri
                .manufacturer
                .as_deref()
                .is_none_or(|m| m == info.manufacturer_id().trim())
            && uri
                .model
                .as_deref()
                .is_none_or(|m| m == info.model().trim())
            && uri.slot_id.is_none_or(|id| id == slot.id());
        present.push(format!("{label:?}"));
        if ok {
            found.push((slot, label));
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(HsmError::TokenNotFound {
            uri: uri.to_string(),
            module: module.to_path_buf(),
            present: if present.is_empty() {
                "none".into()
            } else {
                present.join(", ")
            },
        }),
        n => Err(HsmError::BadUri {
            uri: uri.to_string(),
            detail: format!("{n} tokens match; add token= or serial="),
        }),
    }
}
