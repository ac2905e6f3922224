//! `pre_request(worker, req)` and `post_request(worker, req, environ, resp)`, with request
//! and response objects carrying the attributes hooks use in practice. Nothing here runs
//! unless the config file defines one of the two hooks.

use ferricorn_server::Request;
use http::Version;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};
use pyo3::IntoPyObjectExt;

use super::response::StartResponse;
use crate::pyhelpers::{format_exception, new_namespace};

pub struct RequestHooks {
    pub worker: Py<PyAny>,
    pub pre: Option<Py<PyAny>>,
    /// The hook and how many arguments it takes (Gunicorn accepts 2, 3 or 4).
    pub post: Option<(Py<PyAny>, usize)>,
    /// `lambda: False` and `lambda: True`, made once, for `req.should_close`.
    answers: [Py<PyAny>; 2],
}

impl RequestHooks {
    pub fn new(
        py: Python<'_>,
        worker: &Bound<'_, PyAny>,
        pre: Option<Bound<'_, PyAny>>,
        post: Option<Bound<'_, PyAny>>,
    ) -> Option<Self> {
        if pre.is_none() && post.is_none() {
            return None;
        }
        let post = post.map(|p| {
            let arity = py
                .import("inspect")
                .and_then(|i| i.getattr("signature")?.call1((&p,))?.getattr("parameters")?.len())
                .unwrap_or(4);
            (p.unbind(), arity.clamp(2, 4))
        });
        let answer = |src: &std::ffi::CStr| py.eval(src, None, None).map(Bound::unbind).ok();
        Some(Self {
            worker: worker.clone().unbind(),
            pre: pre.map(Bound::unbind),
            post,
            answers: [answer(c"lambda: False")?, answer(c"lambda: True")?],
        })
    }

    /// The `req` object: `method`, `path`, `uri`, `query`, `headers`, `version`, `scheme`.
    pub fn request_object<'py>(&self, py: Python<'py>, req: &Request) -> PyResult<Bound<'py, PyAny>> {
        let head = &req.head;
        let headers = PyList::empty(py);
        for (name, value) in &head.headers {
            let value = ferricorn_core::request::latin1(value.as_bytes());
            headers.append((name.as_str().to_ascii_uppercase(), value))?;
        }
        let peer = match req.conn.peer {
            Some(p) => (p.ip().to_string(), p.port()).into_pyobject(py)?.into_any(),
            None => "".into_pyobject(py)?.into_any(),
        };
        let version = match head.version {
            Version::HTTP_10 => (1, 0),
            Version::HTTP_2 => (2, 0),
            _ => (1, 1),
        };
        new_namespace(
            py,
            &[
                ("method", head.method.as_str().into_pyobject(py)?.into_any()),
                ("path", head.uri.path().into_pyobject(py)?.into_any()),
                (
                    "uri",
                    ferricorn_core::request::raw_target(&head.uri, head.version)
                        .as_ref()
                        .into_pyobject(py)?
                        .into_any(),
                ),
                ("query", head.uri.query().unwrap_or("").into_pyobject(py)?.into_any()),
                ("headers", headers.into_any()),
                ("version", PyTuple::new(py, [version.0, version.1])?.into_any()),
                ("scheme", req.scheme().into_pyobject(py)?.into_any()),
                // Gunicorn's `Request.remote_addr` is the peer's address as the socket
                // gives it: `(ip, port)`, or "" on a UNIX socket.
                ("remote_addr", peer.clone()),
                ("peer_addr", peer),
                // The rest of Gunicorn's Request that hooks read: the fragment never
                // reaches the server (clients do not send it), trailers come after the
                // body the app has yet to read.
                ("fragment", "".into_pyobject(py)?.into_any()),
                ("trailers", PyList::empty(py).into_any()),
                ("proxy_protocol_info", py.None().into_bound(py)),
                (
                    "should_close",
                    self.answers[usize::from(request_closes(head))].bind(py).clone(),
                ),
            ],
        )
    }

    /// Runs `pre_request`, then counts the request in `worker.nr` (in Gunicorn's order:
    /// the hook sees the count of the requests before this one). The hook's exception is
    /// the request's.
    pub fn pre_request(&self, py: Python<'_>, req: &Bound<'_, PyAny>) -> PyResult<()> {
        let worker = self.worker.bind(py);
        if let Some(hook) = &self.pre {
            hook.bind(py).call1((worker, req))?;
        }
        if let Ok(nr) = worker.getattr("nr").and_then(|n| n.extract::<u64>()) {
            let _ = worker.setattr("nr", nr + 1);
        }
        Ok(())
    }

    pub fn post_request<'py>(
        &self,
        py: Python<'py>,
        req: &Bound<'_, PyAny>,
        environ: &Bound<'_, PyAny>,
        resp: &Bound<'_, StartResponse>,
    ) {
        let Some((hook, arity)) = &self.post else { return };
        let r = resp.borrow();
        let status = r
            .status
            .as_ref()
            .map_or_else(|| "500 Internal Server Error".into(), |s| s.bind(py).to_string());
        let code: u16 = status.get(..3).and_then(|c| c.parse().ok()).unwrap_or(500);
        let headers = r
            .headers
            .as_ref()
            .map_or_else(|| PyList::empty(py).into_any(), |h| h.bind(py).clone());
        let sent = r.sent;
        let headers_sent = r.headers_sent();
        drop(r);
        // Gunicorn's `response_length`: the app's Content-Length, else None (and then
        // the body is chunked on HTTP/1.1, except where it can have none).
        let length: Option<u64> = headers.try_iter().ok().and_then(|items| {
            items.flatten().find_map(|h| {
                let (k, v): (String, String) = h.extract().ok()?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())
                    .flatten()
            })
        });
        // Gunicorn's is_chunked(): HTTP/1.1 or later, not HEAD, a status with a body.
        let http11 = req
            .getattr("version")
            .and_then(|v| v.extract::<(u8, u8)>())
            .is_ok_and(|v| v >= (1, 1));
        let head = req
            .getattr("method")
            .and_then(|m| m.extract::<String>())
            .is_ok_and(|m| m == "HEAD");
        let chunked = length.is_none() && http11 && !head && !matches!(code, 204 | 304) && code >= 200;
        // A value that cannot become a Python object (it always can) is None.
        let any = |v: PyResult<Bound<'py, PyAny>>| v.unwrap_or_else(|_| py.None().into_bound(py));
        let resp_obj = new_namespace(
            py,
            &[
                ("status", any(status.into_bound_py_any(py))),
                ("status_code", any(code.into_bound_py_any(py))),
                ("headers", headers),
                ("response_length", any(length.into_bound_py_any(py))),
                ("headers_sent", any(headers_sent.into_bound_py_any(py))),
                ("chunked", any(chunked.into_bound_py_any(py))),
                ("version", any(ferricorn_core::SERVER_SOFTWARE.into_bound_py_any(py))),
                ("upgrade", any(false.into_bound_py_any(py))),
                ("must_close", any(false.into_bound_py_any(py))),
                ("sent", any(sent.into_bound_py_any(py))),
            ],
        );
        let worker = self.worker.bind(py);
        let result = resp_obj.and_then(|resp_obj| match arity {
            2 => hook.bind(py).call1((worker, req)),
            3 => hook.bind(py).call1((worker, req, environ)),
            _ => hook.bind(py).call1((worker, req, environ, resp_obj)),
        });
        if let Err(e) = result {
            ferricorn_core::error!("Exception in post_request hook:\n{}", format_exception(py, &e));
        }
    }
}

/// Gunicorn's `Request.should_close()`: `Connection: close`, or HTTP/1.0 without
/// `keep-alive`.
fn request_closes(head: &http::request::Parts) -> bool {
    let has = |token: &str| ferricorn_server::has_token(&head.headers, http::header::CONNECTION, token);
    has("close") || (head.version == Version::HTTP_10 && !has("keep-alive"))
}
