//! Response headers that an application passes as the same Python objects on every
//! response (a literal `"Content-Type"`, `b"text/plain"`) are parsed and validated once.
//!
//! Two small direct-mapped tables, one for names and one for values, keyed by the
//! object's address. An entry holds a reference to its key object, so the address cannot
//! be reused by another object while the entry exists, and `str`/`bytes` contents never
//! change: a hit is always the right answer. A miss parses as usual and takes the slot.
//! Callers check the object's type before looking it up (WSGI takes `str`, ASGI `bytes`),
//! so the cache never widens what a bridge accepts; failures are not cached. Callers
//! pass objects borrowed from the app's header list, so that reference counts tell a
//! constant from a temporary (see `lasting`).

use std::sync::Mutex;

use std::borrow::Cow;

use ferricorn_server::{HeadError, ResponseHead};
use http::{HeaderName, HeaderValue};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::MutexExt;

const SLOTS: usize = 64;
const MAX_VALUE_LEN: usize = 128;

struct Table<T> {
    slots: [Option<(Py<PyAny>, T)>; SLOTS],
}

impl<T: Clone> Table<T> {
    const fn new() -> Self {
        Self {
            slots: [const { None }; SLOTS],
        }
    }

    fn slot(obj: &Bound<'_, PyAny>) -> usize {
        // Python objects are 16-byte aligned: the low bits carry no information.
        (obj.as_ptr() as usize >> 4) % SLOTS
    }

    fn get(&self, obj: &Bound<'_, PyAny>) -> Option<T> {
        match &self.slots[Self::slot(obj)] {
            Some((key, parsed)) if key.as_ptr() == obj.as_ptr() => Some(parsed.clone()),
            _ => None,
        }
    }

    fn put(&mut self, obj: &Bound<'_, PyAny>, parsed: T) {
        self.slots[Self::slot(obj)] = Some((obj.clone().unbind(), parsed));
    }
}

static NAMES: Mutex<Table<HeaderName>> = Mutex::new(Table::new());
static VALUES: Mutex<Table<HeaderValue>> = Mutex::new(Table::new());

/// The last `Content-Length` value parsed, by its text. An application makes a new
/// object for it on every response (`str(len(body))`), so the tables above never keep
/// it, but the text repeats whenever the body's size does. Holds no Python object: no
/// Python code runs while it is locked.
static LAST_LENGTH: Mutex<Option<LastLength>> = Mutex::new(None);

/// The longest `Content-Length` text remembered: any `u64` in decimal.
const LENGTH_TEXT_MAX: usize = 20;

struct LastLength {
    text: [u8; LENGTH_TEXT_MAX],
    len: usize,
    value: HeaderValue,
    n: u64,
}

fn push_content_length(head: &mut ResponseHead, text: &[u8]) -> Result<(), HeadError> {
    let hit = LAST_LENGTH.lock().ok().and_then(|last| {
        let l = last.as_ref()?;
        (l.text[..l.len] == *text).then(|| (l.value.clone(), l.n))
    });
    if let Some((value, n)) = hit {
        return head.push_content_length(value, n);
    }
    let value = ResponseHead::parse_value(&http::header::CONTENT_LENGTH, text)?;
    let n = ResponseHead::parse_content_length(&value)?;
    if text.len() <= LENGTH_TEXT_MAX {
        if let Ok(mut last) = LAST_LENGTH.lock() {
            let mut copy = [0; LENGTH_TEXT_MAX];
            copy[..text.len()].copy_from_slice(text);
            *last = Some(LastLength {
                text: copy,
                len: text.len(),
                value: value.clone(),
                n,
            });
        }
    }
    head.push_content_length(value, n)
}

/// Whether `obj` outlives this response: something besides the header list holds it (a
/// module's or function's constant, a framework's header store), or the pair holding it
/// is itself such a constant (`("Content-Type", "text/plain")` in a function is one
/// constant tuple). An object only the list refers to (`str(len(body))`) is made for this
/// response: caching it would only evict a constant. `obj` is borrowed from `pair`;
/// `pair` is held by the header list and by the caller, who is iterating over it.
fn lasting(obj: &Bound<'_, PyAny>, pair: &Bound<'_, PyAny>) -> bool {
    // SAFETY: both are live objects and the caller holds the GIL.
    unsafe { pyo3::ffi::Py_REFCNT(obj.as_ptr()) > 1 || pyo3::ffi::Py_REFCNT(pair.as_ptr()) > 2 }
}

fn cached<T: Clone, E>(
    table: &Mutex<Table<T>>,
    obj: &Bound<'_, PyAny>,
    keep: bool,
    parse: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    // Callers hold the GIL, but dropping an evicted object may run Python code and let
    // another thread in: the lock is waited for without the GIL. A poisoned one
    // (impossible: nothing in it panics) just bypasses the cache.
    if let Some(hit) = table.lock_py_attached(obj.py()).ok().and_then(|t| t.get(obj)) {
        return Ok(hit);
    }
    let parsed = parse()?;
    if keep {
        if let Ok(mut t) = table.lock_py_attached(obj.py()) {
            t.put(obj, parsed.clone());
        }
    }
    Ok(parsed)
}

/// Adds one `(name, value)` pair of an application's header list to `head`. `name_bytes`
/// and `value_bytes` convert the items (each bridge has its own rules: WSGI takes
/// latin-1 `str`, ASGI `bytes`) and run only when the cache misses; `value_len` is the
/// value's length in the object's units. Long values (cookies, policies) are rarely the
/// same object twice and an entry keeps its object alive: only short ones are cached.
/// A `Content-Length` is remembered by its text instead (see `LAST_LENGTH`).
pub fn push<'a>(
    head: &mut ResponseHead,
    pair: &Bound<'_, PyAny>,
    name: &Bound<'_, PyAny>,
    value: &Bound<'_, PyAny>,
    value_len: usize,
    name_bytes: impl FnOnce() -> PyResult<Cow<'a, [u8]>>,
    value_bytes: impl FnOnce() -> PyResult<Cow<'a, [u8]>>,
) -> PyResult<()> {
    let invalid = |e: HeadError| PyValueError::new_err(e.to_string());
    let hname = cached(&NAMES, name, lasting(name, pair), || {
        ResponseHead::parse_name(&name_bytes()?).map_err(invalid)
    })?;
    if hname == http::header::CONTENT_LENGTH {
        return push_content_length(head, &value_bytes()?).map_err(invalid);
    }
    let parse_value = || ResponseHead::parse_value(&hname, &value_bytes()?).map_err(invalid);
    let hvalue = if value_len > MAX_VALUE_LEN {
        parse_value()?
    } else {
        cached(&VALUES, value, lasting(value, pair), parse_value)?
    };
    head.push_parsed(hname, hvalue).map_err(invalid)
}
