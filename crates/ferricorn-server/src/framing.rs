//! A byte-level view of request heads, kept alongside hyper's parser.
//!
//! hyper resolves two smuggling-relevant cases on its own before the front end sees the
//! request: it drops `Content-Length` when `Transfer-Encoding` is present, and folds
//! repeated identical `Content-Length` headers into one. Gunicorn answers both with 400,
//! and so do we; to see them, [`HeadScanner`] follows the raw stream as it is read —
//! heads line by line, bodies by their framing — and records, per request head, how many
//! `Content-Length` and `Transfer-Encoding` lines it had, and what hyper's parsed view
//! loses: the raw lengths of the request line and header lines (Gunicorn's limits count
//! them as sent), non-ASCII bytes in the request line, bare LFs. Every other rule is left
//! to hyper and `ferricorn_core::request`. When it meets something it cannot follow
//! (CONNECT, a framing hyper will refuse) it stops; those connections are closed after
//! the current response anyway.

/// What one request head contained, byte for byte.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HeadFacts {
    pub content_lengths: u32,
    pub transfer_encodings: u32,
    /// The request line has a byte outside ASCII (Gunicorn refuses it; httparse takes
    /// it, and the environ's raw strings would not be latin-1 text).
    pub non_ascii_line: bool,
    /// The request line's length (without its CRLF) when it is over
    /// `--limit-request-line`: measured on the raw line, since the URI hyper hands over
    /// has lost its fragment.
    pub long_line: Option<(u32, u32)>,
    /// A header line, its CRLF included, is over `--limit-request-field-size`
    /// (Gunicorn measures the line as sent, whatever its whitespace).
    pub long_field: bool,
}

impl HeadFacts {
    /// The error Gunicorn answers this head with, if any: its status and reason.
    pub fn framing_error(&self) -> Option<(u16, std::borrow::Cow<'static, str>)> {
        if let Some((len, limit)) = self.long_line {
            return Some((414, format!("Request Line is too large ({len} > {limit})").into()));
        }
        if self.long_field {
            return Some((431, "limit request headers fields size".into()));
        }
        self.bad_framing().map(|e| (400, e.into()))
    }

    fn bad_framing(&self) -> Option<&'static str> {
        if self.non_ascii_line {
            Some("Invalid HTTP request line: non-ASCII byte")
        } else if self.content_lengths > 0 && self.transfer_encodings > 0 {
            Some("Content-Length and Transfer-Encoding together")
        } else if self.content_lengths > 1 {
            Some("duplicate Content-Length header")
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between messages: empty lines are skipped, as httparse does.
    Idle,
    RequestLine,
    Headers,
    Body(u64),
    ChunkSize {
        size: u64,
        digits: u32,
        ext: Ext,
        /// Whitespace after the digits: allowed only before an extension (RFC 9112 BWS).
        ws: bool,
    },
    ChunkData(u64),
    /// The CRLF after chunk data.
    ChunkEnd,
    Trailers {
        empty_line: bool,
    },
    Stop,
}

/// Where a chunk-size line is in its extensions: RFC 9112's
/// `*( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] )`, as Gunicorn
/// matches it (no whitespace after the last one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ext {
    /// No `;` yet.
    None,
    /// After `;`: whitespace, then a name.
    Start,
    Name,
    NameWs,
    /// After `=`: whitespace, then a token or a quoted string.
    Eq,
    Value,
    ValueWs,
    Quoted,
    QuotedEscape,
    /// Right after a quoted value's closing quote.
    Unquoted,
}

impl Ext {
    fn is_token(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
    }

    /// The state after `b`, or `None` if `b` cannot come here.
    fn next(self, b: u8) -> Option<Ext> {
        let ws = b == b' ' || b == b'\t';
        Some(match self {
            Ext::None | Ext::NameWs | Ext::ValueWs | Ext::Name | Ext::Value | Ext::Unquoted if b == b';' => Ext::Start,
            Ext::Start if ws => Ext::Start,
            Ext::Start | Ext::Name if Self::is_token(b) => Ext::Name,
            Ext::Name | Ext::NameWs if ws => Ext::NameWs,
            Ext::Name | Ext::NameWs if b == b'=' => Ext::Eq,
            Ext::Eq if ws => Ext::Eq,
            Ext::Eq if b == b'"' => Ext::Quoted,
            Ext::Eq | Ext::Value if Self::is_token(b) => Ext::Value,
            Ext::Value | Ext::ValueWs | Ext::Unquoted if ws => Ext::ValueWs,
            Ext::Quoted if b == b'"' => Ext::Unquoted,
            Ext::Quoted if b == b'\\' => Ext::QuotedEscape,
            Ext::Quoted if b == b'\t' || (0x20..=0x7e).contains(&b) || b >= 0x80 => Ext::Quoted,
            Ext::QuotedEscape if b == b'\t' || (0x20..=0x7e).contains(&b) || b >= 0x80 => Ext::Quoted,
            _ => return None,
        })
    }

    /// Whether the line may end here.
    fn complete(self) -> bool {
        matches!(self, Ext::None | Ext::Name | Ext::Value | Ext::Unquoted)
    }
}

/// Gunicorn's words for a bare LF in or before a request line.
const BARE_LF_LINE: &str = "Invalid HTTP request line: 'bare LF as line terminator'";

/// Longest header-line prefix kept: enough for the names and values we inspect.
const LINE_CAP: usize = 1024;

pub struct HeadScanner {
    /// The request line of the head being read (or last read), for logging requests
    /// that hyper refuses before the front end sees them (bytes as read: it is text only
    /// if it has to be logged).
    pub request_line: Vec<u8>,
    state: State,
    line: Vec<u8>,
    line_len: usize,
    facts: HeadFacts,
    content_length: Option<u64>,
    chunked: bool,
    connect: bool,
    /// The byte before the current one in a line, to tell CRLF from a bare LF.
    prev: u8,
    /// The request line being read has a byte outside ASCII (anywhere in it: `line`
    /// keeps only its first `LINE_CAP` bytes).
    line_non_ascii: bool,
    /// Set when a chunked body breaks a rule hyper lets through (whitespace after the
    /// size, control bytes in an extension, bare LF). The connection's reader records it:
    /// the request is refused with 400 if the front end still holds its body, and no later
    /// request on the connection is served (the scanner has stopped following it).
    pub body_violation: Option<&'static str>,
    /// A request the reader must answer itself, because hyper would wait for more bytes
    /// (or take them) where Gunicorn answers at once: a request line past
    /// `limit_request_line` with no end yet (414), a bare LF in a head or before it, or
    /// more than the one empty line RFC 9112 2.2 lets a server skip before a request
    /// line (400). Scanning stops.
    pub reject: Option<(u16, std::borrow::Cow<'static, str>)>,
    /// `--limit-request-line` (0: none).
    line_limit: usize,
    /// `--limit-request-field-size` (0: none).
    field_limit: usize,
    /// Empty lines seen since the last message.
    empty_lines: u8,
    /// Bytes of the head being read, its finished lines (with their LF) only.
    head_len: usize,
}

impl Default for HeadScanner {
    fn default() -> Self {
        Self {
            request_line: Vec::new(),
            state: State::Idle,
            line: Vec::with_capacity(128),
            line_len: 0,
            facts: HeadFacts::default(),
            content_length: None,
            chunked: false,
            connect: false,
            prev: 0,
            line_non_ascii: false,
            body_violation: None,
            reject: None,
            line_limit: 0,
            field_limit: 0,
            empty_lines: 0,
            head_len: 0,
        }
    }
}

impl HeadScanner {
    /// A scanner that refuses an unfinished request line past `line_limit` bytes and
    /// flags header lines past `field_limit` (0: none).
    pub fn with_limits(line_limit: usize, field_limit: usize) -> Self {
        Self {
            line_limit,
            field_limit,
            ..Self::default()
        }
    }

    /// Feeds bytes read from the client; `on_head` receives each completed head's facts.
    pub fn feed(&mut self, mut data: &[u8], on_head: &mut impl FnMut(HeadFacts)) {
        while !data.is_empty() {
            match self.state {
                State::Stop => return,
                State::Body(n) => {
                    let take = (n.min(data.len() as u64)) as usize;
                    data = &data[take..];
                    let left = n - take as u64;
                    self.state = if left == 0 { State::Idle } else { State::Body(left) };
                }
                State::ChunkData(n) => {
                    let take = (n.min(data.len() as u64)) as usize;
                    data = &data[take..];
                    let left = n - take as u64;
                    self.state = if left == 0 {
                        State::ChunkEnd
                    } else {
                        State::ChunkData(left)
                    };
                }
                // Head lines are taken a line at a time: only their ends are state changes.
                State::RequestLine | State::Headers => match find_lf(data) {
                    Some(end) => {
                        self.check_ascii(&data[..end]);
                        self.push(&data[..end]);
                        if end > 0 {
                            self.prev = data[end - 1];
                        }
                        data = &data[end + 1..];
                        self.head_line_end(on_head);
                        self.prev = b'\n';
                    }
                    None => {
                        self.check_ascii(data);
                        self.push(data);
                        self.prev = data[data.len() - 1];
                        data = &[];
                        // Gunicorn's read_line: more than the limit (and a CRLF) without
                        // the line's end is a 414 at once.
                        if self.state == State::RequestLine
                            && self.line_limit > 0
                            && self.line_len.saturating_sub(2) > self.line_limit
                        {
                            let (len, limit) = (self.line_len, self.line_limit);
                            self.reject = Some((414, format!("Request Line is too large ({len} > {limit})").into()));
                            self.state = State::Stop;
                        }
                    }
                },
                _ => {
                    let b = data[0];
                    data = &data[1..];
                    self.byte(b);
                    self.prev = b;
                }
            }
        }
    }

    fn byte(&mut self, b: u8) {
        match self.state {
            State::Idle => {
                if b == b'\n' && self.prev != b'\r' {
                    // Gunicorn skips one CRLF before a request line, never a bare LF.
                    self.reject = Some((400, BARE_LF_LINE.into()));
                    self.state = State::Stop;
                } else if b == b'\n' {
                    self.empty_lines = self.empty_lines.saturating_add(1);
                    if self.empty_lines > 1 {
                        self.reject = Some((400, "Invalid HTTP request line: empty lines before the request".into()));
                        self.state = State::Stop;
                    }
                } else if b != b'\r' {
                    self.empty_lines = 0;
                    self.state = State::RequestLine;
                    self.head_len = 0;
                    self.line.clear();
                    self.line_len = 0;
                    self.line_non_ascii = !b.is_ascii();
                    self.push(&[b]);
                }
            }
            State::ChunkSize { size, digits, ext, ws } => {
                // Gunicorn's chunk-size line: hex digits, then optional whitespace only
                // before `;`, extensions of visible characters, CRLF.
                if b == b'\n' {
                    self.state = if self.prev != b'\r' {
                        self.violation("chunk line ends with LF without CR")
                    } else if ws && ext == Ext::None {
                        self.violation("whitespace after the chunk size")
                    } else if !ext.complete() {
                        self.violation("invalid chunk extension")
                    } else if digits == 0 {
                        State::Stop
                    } else if size == 0 {
                        State::Trailers { empty_line: true }
                    } else {
                        State::ChunkData(size)
                    };
                } else if b == b'\r' {
                } else if self.prev == b'\r' {
                    self.state = self.violation("bare CR in a chunk line");
                } else if ext != Ext::None || b == b';' {
                    self.state = match ext.next(b) {
                        Some(ext) => State::ChunkSize { size, digits, ext, ws },
                        None => self.violation("invalid chunk extension"),
                    };
                } else if b == b' ' || b == b'\t' {
                    self.state = State::ChunkSize {
                        size,
                        digits,
                        ext,
                        ws: true,
                    };
                } else if b.is_ascii_hexdigit() && !ws {
                    let d = u64::from((b as char).to_digit(16).unwrap_or(0));
                    match size.checked_mul(16).and_then(|s| s.checked_add(d)) {
                        Some(s) => {
                            self.state = State::ChunkSize {
                                size: s,
                                digits: digits + 1,
                                ext,
                                ws,
                            }
                        }
                        None => self.state = State::Stop,
                    }
                } else {
                    self.state = self.violation("invalid chunk size");
                }
            }
            State::ChunkEnd => {
                if b == b'\n' {
                    self.state = if self.prev != b'\r' {
                        self.violation("chunk data ends with LF without CR")
                    } else {
                        State::ChunkSize {
                            size: 0,
                            digits: 0,
                            ext: Ext::None,
                            ws: false,
                        }
                    };
                }
            }
            State::Trailers { empty_line } => {
                if b == b'\n' && self.prev != b'\r' {
                    self.state = self.violation("trailer line ends with LF without CR");
                } else if b == b'\n' {
                    self.state = if empty_line {
                        State::Idle
                    } else {
                        State::Trailers { empty_line: true }
                    };
                } else if b != b'\r' {
                    self.state = State::Trailers { empty_line: false };
                }
            }
            // Head lines are fed a line at a time (`head_line_end`), bodies in bulk.
            State::RequestLine | State::Headers | State::Body(_) | State::ChunkData(_) | State::Stop => {}
        }
    }

    /// The LF ending a line of the head (the line's bytes are in `line`, the byte before
    /// the LF in `prev`).
    fn head_line_end(&mut self, on_head: &mut impl FnMut(HeadFacts)) {
        if self.prev != b'\r' {
            // Gunicorn requires CRLF and refuses a bare LF as soon as it reads one;
            // httparse takes it, and a head that never ends would wait for the timeout.
            self.reject = Some(if self.state == State::RequestLine {
                (400, BARE_LF_LINE.into())
            } else {
                (400, "Invalid HTTP Header: 'bare LF as line terminator'".into())
            });
            self.state = State::Stop;
            return;
        }
        if self.state == State::RequestLine {
            self.connect = self.line.starts_with(b"CONNECT ");
            self.request_line.clear();
            self.request_line.extend_from_slice(trim_cr(&self.line));
            let raw_len = self.line_len - 1;
            self.facts = HeadFacts {
                non_ascii_line: self.line_non_ascii,
                long_line: (self.line_limit > 0 && raw_len > self.line_limit).then(|| {
                    let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
                    (clamp(raw_len), clamp(self.line_limit))
                }),
                ..HeadFacts::default()
            };
            self.content_length = None;
            self.chunked = false;
            self.state = State::Headers;
        } else {
            let line = trim_cr(&self.line);
            if line.is_empty() && self.line_len <= 1 {
                on_head(self.facts);
                self.head_len = 0;
                self.state = self.body_state();
                self.line.clear();
                self.line_len = 0;
                return;
            } else {
                let with_crlf = self.line_len + 1;
                if self.field_limit > 0 && with_crlf > self.field_limit {
                    self.facts.long_field = true;
                }
                self.header_line();
            }
        }
        self.head_len += self.line_len + 1;
        self.line.clear();
        self.line_len = 0;
    }

    /// Bytes received of a head not finished yet (0 between heads and in bodies): what
    /// the HTTP parser holds in its buffer for this connection.
    pub fn unfinished_head_len(&self) -> usize {
        match self.state {
            State::RequestLine | State::Headers => self.head_len + self.line_len,
            _ => 0,
        }
    }

    /// Refuses the connection's input from here on with `status` (answered by the
    /// connection's reader, see `reject`).
    pub fn refuse(&mut self, status: u16, detail: &'static str) {
        self.reject = Some((status, detail.into()));
        self.state = State::Stop;
    }

    /// Notes a byte outside ASCII in the request line (header values may have them).
    fn check_ascii(&mut self, bytes: &[u8]) {
        if self.state == State::RequestLine && !self.line_non_ascii {
            self.line_non_ascii = !bytes.is_ascii();
        }
    }

    fn violation(&mut self, what: &'static str) -> State {
        self.body_violation = Some(what);
        State::Stop
    }

    fn push(&mut self, bytes: &[u8]) {
        self.line_len += bytes.len();
        let room = LINE_CAP.saturating_sub(self.line.len());
        self.line.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn header_line(&mut self) {
        let line = trim_cr(&self.line);
        if line.first().is_some_and(|c| *c == b' ' || *c == b'\t') {
            return; // obs-fold: hyper refuses the request
        }
        let Some(colon) = line.iter().position(|c| *c == b':') else {
            return;
        };
        let name = &line[..colon];
        let value = || trim(&line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"content-length") {
            let value = value();
            self.facts.content_lengths += 1;
            // A line cut at `LINE_CAP` (a value padded with zeros or blanks) would be
            // read as another length than hyper reads: stop following instead.
            self.content_length = (self.line_len <= LINE_CAP)
                .then(|| std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()))
                .flatten();
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let value = value();
            self.facts.transfer_encodings += 1;
            let last = value.rsplit(|c| *c == b',').next().map(trim).unwrap_or_default();
            self.chunked = last.eq_ignore_ascii_case(b"chunked") && self.line_len <= LINE_CAP;
        }
    }

    fn body_state(&self) -> State {
        // An `Upgrade:` header alone changes nothing (curl offers `h2c` on every plain
        // request): the body is framed as usual, and the reader stops feeding us once
        // the connection really switches protocols.
        if self.connect || self.facts.framing_error().is_some() {
            return State::Stop;
        }
        if self.facts.transfer_encodings > 0 {
            return if self.chunked {
                State::ChunkSize {
                    size: 0,
                    digits: 0,
                    ext: Ext::None,
                    ws: false,
                }
            } else {
                State::Stop
            };
        }
        match (self.facts.content_lengths, self.content_length) {
            (0, _) | (_, Some(0)) => State::Idle,
            (_, Some(n)) => State::Body(n),
            (_, None) => State::Stop,
        }
    }
}

/// The first `\n` in `data`, eight bytes at a time.
fn find_lf(data: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const LFS: u64 = ONES * b'\n' as u64;
    let mut words = data.chunks_exact(8);
    let mut at = 0;
    for word in &mut words {
        let Ok(bytes) = <[u8; 8]>::try_from(word) else { break };
        let x = u64::from_le_bytes(bytes) ^ LFS;
        // Non-zero exactly when some byte of `x` is zero, i.e. some byte was `\n`.
        if x.wrapping_sub(ONES) & !x & HIGHS != 0 {
            return word.iter().position(|&b| b == b'\n').map(|i| at + i);
        }
        at += 8;
    }
    words.remainder().iter().position(|&b| b == b'\n').map(|i| at + i)
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &v[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&[u8]]) -> Vec<HeadFacts> {
        let mut s = HeadScanner::default();
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, &mut |f| out.push(f));
        }
        out
    }

    #[test]
    fn find_lf_matches_a_plain_search() {
        let mut seed = 0x9e37_79b9_u32;
        for len in 0..70 {
            for _ in 0..200 {
                let data: Vec<u8> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 17;
                        seed ^= seed << 5;
                        // Mostly bytes next to `\n` (9, 11, 0x8a...), sometimes `\n`.
                        [b'\n', 9, 11, 0x8a, 0x0a ^ 0x80, b'a', 0][(seed % 7) as usize]
                    })
                    .collect();
                assert_eq!(find_lf(&data), data.iter().position(|&b| b == b'\n'), "{data:?}");
            }
        }
    }

    /// Heads are scanned a line at a time: where the reads split the stream must not matter.
    #[test]
    fn any_split_of_the_stream_gives_the_same_facts() {
        let stream: &[u8] = b"\r\nPOST / HTTP/1.1\r\nContent-Length: 5\r\nX: y\r\n\r\nhello\
            GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
            GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx";
        let whole = scan(&[stream]);
        assert_eq!(whole.len(), 3);
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(scan(&bytes), whole);
        for cut in 0..stream.len() {
            assert_eq!(scan(&[&stream[..cut], &stream[cut..]]), whole, "split at {cut}");
        }
        for size in 2..9 {
            let parts: Vec<&[u8]> = stream.chunks(size).collect();
            assert_eq!(scan(&parts), whole, "chunks of {size}");
        }
    }

    #[test]
    fn counts_per_head_across_bodies_and_pipelining() {
        let stream: &[u8] = b"\r\nPOST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
            POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nContent-Length: 1\r\n0\r\nT: 1\r\n\r\n\
            GET / HTTP/1.1\r\ncontent-length: 0\r\nContent-Length: 0\r\n\r\n\
            GET / HTTP/1.1\r\n\r\n";
        let expect = vec![
            HeadFacts {
                content_lengths: 1,
                ..HeadFacts::default()
            },
            HeadFacts {
                transfer_encodings: 1,
                ..HeadFacts::default()
            },
            HeadFacts {
                content_lengths: 2,
                ..HeadFacts::default()
            },
        ];
        assert_eq!(scan(&[stream]), expect);
        // The same stream one byte at a time.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(scan(&bytes), expect);
    }

    #[test]
    fn chunk_payload_lines_are_not_headers() {
        let s: &[u8] = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n14\r\nContent-Length: 99\r\n\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let facts = scan(&[s]);
        assert_eq!(facts.len(), 2);
        assert_eq!(facts[1], HeadFacts::default());
    }

    #[test]
    fn bare_lf_heads_are_refused_at_once() {
        for (head, what) in [
            (&b"GET / HTTP/1.1\nHost: x\r\n\r\n"[..], "request line"),
            (b"GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n", "Header"),
            (b"GET / HTTP/1.1\r\nHost: x\r\n\n", "Header"),
            // A head that would never end: refused without waiting.
            (b"GET / HTTP/1.1\r\nHost: x\n", "Header"),
        ] {
            let mut s = HeadScanner::default();
            let mut heads = 0;
            s.feed(head, &mut |_| heads += 1);
            assert_eq!(heads, 0);
            let (status, detail) = s.reject.expect("refused");
            assert_eq!(status, 400);
            assert!(detail.contains(what) && detail.contains("bare LF"), "{detail}");
        }
        assert_eq!(scan(&[b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"])[0].framing_error(), None);
    }

    #[test]
    fn non_ascii_request_lines_are_flagged() {
        let bad = scan(&[b"GET /p\xe2\x82\xac HTTP/1.1\r\nHost: x\r\n\r\n"]);
        assert_eq!(bad[0].bad_framing(), Some("Invalid HTTP request line: non-ASCII byte"));
        // Anywhere in the line, not only in the part kept for inspection.
        let far = [
            b"GET /".as_slice(),
            &[b'a'; 1100],
            b"\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n",
        ]
        .concat();
        for pieces in [vec![&far[..]], far.chunks(7).collect()] {
            assert!(scan(&pieces)[0].non_ascii_line);
        }
        // Header values may carry obs-text (latin-1).
        let ok = scan(&[b"GET /p%E2%82%AC HTTP/1.1\r\nHost: x\r\nX-Name: caf\xe9\r\n\r\n"]);
        assert_eq!(ok[0].framing_error(), None);
    }

    #[test]
    fn the_raw_request_line_counts_toward_the_limit() {
        let facts = |line: &[u8], limit: usize| {
            let mut s = HeadScanner::with_limits(limit, 0);
            let mut out = Vec::new();
            s.feed(&[line, b"\r\nHost: x\r\n\r\n"].concat(), &mut |f| out.push(f));
            out[0]
        };
        // The fragment is cut from the URI hyper hands over; Gunicorn measures the line.
        let line = [b"GET /#".as_slice(), &[b'a'; 5000], b" HTTP/1.1"].concat();
        let f = facts(&line, 4094);
        assert_eq!(f.long_line, Some((5015, 4094)));
        assert_eq!(f.framing_error().map(|e| e.0), Some(414));
        assert_eq!(facts(&line, 0).long_line, None);
        assert_eq!(facts(&line[..4094], 4094).long_line, None);
        assert_eq!(facts(&line[..4095], 4094).long_line, Some((4095, 4094)));
    }

    /// The raw measures and refusals do not depend on how the reads split the stream.
    #[test]
    fn limits_and_refusals_do_not_depend_on_the_split() {
        let run = |pieces: &[&[u8]]| {
            let mut s = HeadScanner::with_limits(40, 30);
            let mut out = Vec::new();
            for p in pieces {
                s.feed(p, &mut |f| out.push(f));
            }
            (out, s.reject)
        };
        let streams: [&[u8]; 4] = [
            b"GET /#aaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nX: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: 1\r\n\r\nGET / HTTP/1.1\r\nX:                            y\r\n\r\n",
            b"GET /\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\n\r\n",
        ];
        for stream in streams {
            let whole = run(&[stream]);
            for cut in 0..stream.len() {
                assert_eq!(run(&[&stream[..cut], &stream[cut..]]), whole, "split at {cut}");
            }
            let bytes: Vec<&[u8]> = stream.chunks(1).collect();
            assert_eq!(run(&bytes), whole);
        }
        let (facts, _) = run(&[streams[0]]);
        // 41 bytes: one past the limit, too short for the unfinished-line refusal, which
        // would depend on where the reads end (as Gunicorn's does).
        assert_eq!(facts[0].long_line, Some((41, 40)));
        let (facts, _) = run(&[streams[1]]);
        assert!(!facts[0].long_field && facts[1].long_field);
        assert!(run(&[streams[2]]).0[0].non_ascii_line);
        let (facts, reject) = run(&[streams[3]]);
        assert_eq!((facts.len(), reject.map(|r| r.0)), (1, Some(400)));
    }

    #[test]
    fn header_lines_are_measured_as_sent() {
        let long_field = |line: &[u8]| {
            let mut s = HeadScanner::with_limits(4094, 8190);
            let mut out = Vec::new();
            s.feed(&[b"GET / HTTP/1.1\r\n", line, b"\r\n\r\n"].concat(), &mut |f| {
                out.push(f)
            });
            out[0].long_field
        };
        // Gunicorn: len(line) + 2 > limit, whatever the whitespace around the value.
        assert!(!long_field(&[b"X:".as_slice(), &[b'a'; 8186]].concat()));
        assert!(long_field(&[b"X:".as_slice(), &[b'a'; 8187]].concat()));
        assert!(long_field(&[b"X:".as_slice(), &[b' '; 200], &[b'a'; 7990]].concat()));
        assert!(!long_field(b"X-Short: v"));
    }

    #[test]
    fn a_content_length_line_past_the_cap_stops_scanning() {
        // Zero-padded to 1,100 digits: a length hyper reads as 18. Read from a cut copy it
        // would be 0, and the body would be taken for the next head.
        let head = [
            b"POST / HTTP/1.1\r\nContent-Length: ".as_slice(),
            &[b'0'; 1100],
            b"18\r\n\r\nGET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        ]
        .concat();
        let f = scan(&[&head]);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].framing_error(), None);
    }

    #[test]
    fn chunk_lines_are_checked_as_gunicorn_does() {
        let violation = |body: &[u8]| {
            let mut s = HeadScanner::default();
            let mut head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            head.extend_from_slice(body);
            s.feed(&head, &mut |_| {});
            s.body_violation
        };
        assert_eq!(violation(b"5\r\nhello\r\n0\r\n\r\n"), None);
        assert_eq!(violation(b"5 ;a=b\r\nhello\r\n0\r\n\r\n"), None);
        assert_eq!(violation(b"5;a=\"x y\"\r\nhello\r\n0\r\n\r\n"), None);
        assert_eq!(violation(b"5;a;b=c ; d = \"e\\\"f\"\r\nhello\r\n0;x=y\r\n\r\n"), None);
        // Gunicorn's CHUNK_EXT_RE refuses these (400 "Invalid chunk extension").
        for bad in [
            &b"5;\r\nhello\r\n0\r\n\r\n"[..],
            b"5;a=\r\nhello\r\n0\r\n\r\n",
            b"5 ;\r\nhello\r\n0\r\n\r\n",
            b"5;;a\r\nhello\r\n0\r\n\r\n",
            b"5;a=b;\r\nhello\r\n0\r\n\r\n",
            b"5;=b\r\nhello\r\n0\r\n\r\n",
            b"5;a=\"b\r\nhello\r\n0\r\n\r\n",
            b"5;a=b \r\nhello\r\n0\r\n\r\n",
            b"5;a\rb\r\nhello\r\n0\r\n\r\n",
            b"5;a=b@c\r\nhello\r\n0\r\n\r\n",
            b"5;a=\"x\"y\r\nhello\r\n0\r\n\r\n",
            // Whitespace without an extension, control bytes, bare LF, two sizes.
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"5\t\r\nhello\r\n0\r\n\r\n",
            b"5;a\x00b\r\nhello\r\n0\r\n\r\n",
            b"5;a\x7fb\r\nhello\r\n0\r\n\r\n",
            b"5;a\xffb\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5 5\r\nhello\r\n",
        ] {
            assert!(violation(bad).is_some(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn what_the_reader_answers_itself() {
        let reject = |parts: &[&[u8]], limit: usize| {
            let mut s = HeadScanner::with_limits(limit, 0);
            for p in parts {
                s.feed(p, &mut |_| {});
            }
            s.reject.map(|r| r.0)
        };
        // One empty line before a request is skipped (RFC 9112 2.2), two are refused.
        assert_eq!(reject(&[b"\r\nGET / HTTP/1.1\r\n\r\n"], 0), None);
        assert_eq!(reject(&[b"\r\n", b"\r\n"], 0), Some(400));
        assert_eq!(reject(&[b"GET / HTTP/1.1\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n"], 0), None);
        assert_eq!(reject(&[b"GET / HTTP/1.1\r\n\r\n\r\n\r\n"], 0), Some(400));
        // Only a CRLF is skipped, never a bare LF (Gunicorn: 400).
        assert_eq!(reject(&[b"\nGET / HTTP/1.1\r\n\r\n"], 0), Some(400));
        assert_eq!(
            reject(&[b"GET / HTTP/1.1\r\n\r\n", b"\nGET / HTTP/1.1\r\n\r\n"], 0),
            Some(400)
        );
        assert_eq!(reject(&[b"\r", b"\nGET / HTTP/1.1\r\n\r\n"], 0), None);
        // A request line without its end: refused once past the limit (and two bytes).
        let long = [b"GET /".as_slice(), &[b'a'; 100]].concat();
        assert_eq!(reject(&[&long[..50], &long[50..]], 100), Some(414));
        let mut s = HeadScanner::with_limits(100, 0);
        s.feed(&long, &mut |_| {});
        assert_eq!(
            s.reject.map(|r| r.1).as_deref(),
            Some("Request Line is too large (105 > 100)")
        );
        assert_eq!(reject(&[&long[..50]], 100), None);
        assert_eq!(reject(&[&long], 0), None);
        // A complete long line is the front end's (its own 414, after hyper parses it).
        assert_eq!(reject(&[&long, b" HTTP/1.1\r\n"], 200), None);
    }

    #[test]
    fn smuggling_shapes_are_flagged_and_scanning_stops() {
        let f = scan(&[b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n"]);
        assert_eq!(f.len(), 1);
        assert!(f[0].framing_error().is_some());
        assert!(
            scan(&[b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx"])[0]
                .framing_error()
                .is_some()
        );
    }
}
