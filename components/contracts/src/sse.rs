//! Server-Sent Events framing (WHATWG HTML, "server-sent events").
//!
//! Every frame ends with a blank line. Field values never contain CR or LF taken from
//! input: `data` is split into one `data:` line per input line (the client joins them
//! back with `\n`), while `id` and comments have line breaks and NUL removed.

/// Appends the `retry:` field (reconnection delay in ms). Sent once, at the start.
pub fn retry(out: &mut String, millis: u64) {
    out.push_str("retry: ");
    out.push_str(&millis.to_string());
    out.push('\n');
}

/// Appends one event: optional `event:` name, optional `id:`, and its data.
pub fn event(out: &mut String, id: Option<&str>, data: &str) {
    if let Some(id) = id {
        push_field(out, "id", id);
    }
    if memchr::memchr2(b'\r', b'\n', data.as_bytes()).is_none() {
        // The usual case (an envelope: JSON has no raw line breaks): one line.
        out.push_str("data: ");
        out.push_str(data);
        out.push_str("\n\n");
        return;
    }
    // CRLF and lone CR are line breaks too; fold them into LF, then one `data:` line
    // per line, so nothing in `data` can end the frame early.
    let data: std::borrow::Cow<'_, str> = if data.contains('\r') {
        data.replace("\r\n", "\n").replace('\r', "\n").into()
    } else {
        data.into()
    };
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
}

/// [`event`] for data read as bytes (a stream entry's envelope): valid UTF-8 as it
/// is, anything else with U+FFFD for each invalid sequence, as a browser's decoder
/// would show it.
pub fn event_bytes(out: &mut String, id: Option<&str>, data: &[u8]) {
    match std::str::from_utf8(data) {
        Ok(text) => event(out, id, text),
        Err(_) => event(out, id, &String::from_utf8_lossy(data)),
    }
}

/// Appends a named event (`event: <name>`): `EventSource` dispatches it to listeners
/// of that name. Without an `id` the client's last event id stays where it was.
pub fn named_event(out: &mut String, name: &str, id: Option<&str>, data: &str) {
    push_field(out, "event", name);
    event(out, id, data);
}

/// Appends an event that carries only an `id:`. Clients dispatch nothing for it (its
/// data is empty), but they record the id as their last event id, so a client whose
/// filter skipped events still resumes after them.
pub fn id_only(out: &mut String, id: &str) {
    push_field(out, "id", id);
    out.push('\n');
}

/// Appends a comment line (`: text`), ignored by clients; used as a keepalive.
pub fn comment(out: &mut String, text: &str) {
    out.push_str(": ");
    out.push_str(&single_line(text));
    out.push_str("\n\n");
}

fn push_field(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str(": ");
    out.push_str(&single_line(value));
    out.push('\n');
}

/// The value with CR, LF and NUL removed.
fn single_line(value: &str) -> std::borrow::Cow<'_, str> {
    if memchr::memchr3(b'\r', b'\n', 0, value.as_bytes()).is_some() {
        value.replace(['\r', '\n', '\0'], "").into()
    } else {
        value.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: Option<&str>, data: &str) -> String {
        let mut s = String::new();
        event(&mut s, id, data);
        s
    }

    #[test]
    fn simple_event() {
        assert_eq!(ev(Some("1-0"), "{}"), "id: 1-0\ndata: {}\n\n");
        assert_eq!(ev(None, "x"), "data: x\n\n");
    }

    #[test]
    fn line_breaks_in_data_become_data_lines() {
        assert_eq!(
            ev(None, "a\n\ndata: x"),
            "data: a\ndata: \ndata: data: x\n\n"
        );
        assert_eq!(ev(None, "a\r\nb\rc"), "data: a\ndata: b\ndata: c\n\n");
        assert_eq!(ev(None, ""), "data: \n\n");
    }

    #[test]
    fn bytes_are_framed_as_text() {
        let mut s = String::new();
        event_bytes(&mut s, Some("2-0"), b"{\"a\":\"\xc3\xa9\"}");
        assert_eq!(s, "id: 2-0\ndata: {\"a\":\"\u{e9}\"}\n\n");
        let mut s = String::new();
        event_bytes(&mut s, None, b"a\xffb\nc");
        assert_eq!(s, "data: a\u{fffd}b\ndata: c\n\n");
    }

    #[test]
    fn ids_and_comments_cannot_break_the_frame() {
        assert_eq!(ev(Some("1\n\ndata: x"), "y"), "id: 1data: x\ndata: y\n\n");
        let mut s = String::new();
        comment(&mut s, "keep\r\nalive");
        assert_eq!(s, ": keepalive\n\n");
        let mut s = String::new();
        id_only(&mut s, "7-1");
        retry(&mut s, 3000);
        assert_eq!(s, "id: 7-1\n\nretry: 3000\n");
    }
}
