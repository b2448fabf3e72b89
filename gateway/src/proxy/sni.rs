//! Reads the server name (SNI) from a TLS ClientHello without terminating
//! TLS, so scheduler traffic can be spliced to the right cluster untouched.

/// What the first bytes of a connection say.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello {
    /// More bytes are needed.
    Incomplete,
    /// Not a TLS ClientHello.
    NotTls,
    /// A complete ClientHello, with its server name if it has one.
    Complete(Option<String>),
}

/// Largest ClientHello accepted (handshake message bytes).
pub const MAX_HELLO: usize = 16 * 1024;

const HANDSHAKE: u8 = 0x16;
const CLIENT_HELLO: u8 = 0x01;
const SERVER_NAME: u16 = 0x0000;

pub fn parse(buf: &[u8]) -> Hello {
    // The handshake message may span several TLS records: gather it.
    let mut message = Vec::new();
    let mut rest = buf;
    loop {
        if rest.is_empty() {
            return Hello::Incomplete;
        }
        if rest[0] != HANDSHAKE {
            return Hello::NotTls;
        }
        if rest.len() < 5 {
            return Hello::Incomplete;
        }
        let len = u16::from_be_bytes([rest[3], rest[4]]) as usize;
        if rest.len() < 5 + len {
            return Hello::Incomplete;
        }
        message.extend_from_slice(&rest[5..5 + len]);
        rest = &rest[5 + len..];
        if message.len() >= 4 {
            if message[0] != CLIENT_HELLO {
                return Hello::NotTls;
            }
            let body_len = u32::from_be_bytes([0, message[1], message[2], message[3]]) as usize;
            if body_len > MAX_HELLO {
                return Hello::NotTls;
            }
            if message.len() >= 4 + body_len {
                return match server_name(&message[4..4 + body_len]) {
                    Some(name) => Hello::Complete(name),
                    None => Hello::NotTls,
                };
            }
        }
    }
}

/// A cursor over the ClientHello body; `None` means malformed.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| b[0] as usize)
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
    }
}

/// `Some(None)`: well formed, no server name.
fn server_name(body: &[u8]) -> Option<Option<String>> {
    let mut r = Reader(body);
    r.take(2 + 32)?; // version, random
    let session = r.u8()?;
    r.take(session)?;
    let suites = r.u16()?;
    r.take(suites)?;
    let compression = r.u8()?;
    r.take(compression)?;
    if r.0.is_empty() {
        return Some(None);
    }
    let extensions_len = r.u16()?;
    let mut extensions = Reader(r.take(extensions_len)?);
    while !extensions.0.is_empty() {
        let kind = extensions.u16()? as u16;
        let len = extensions.u16()?;
        let data = extensions.take(len)?;
        if kind != SERVER_NAME {
            continue;
        }
        let mut list = Reader(data);
        let list_len = list.u16()?;
        let mut names = Reader(list.take(list_len)?);
        while !names.0.is_empty() {
            let name_type = names.u8()?;
            let len = names.u16()?;
            let name = names.take(len)?;
            if name_type == 0 {
                return Some(Some(String::from_utf8(name.to_vec()).ok()?));
            }
        }
    }
    Some(None)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal ClientHello with the given SNI, split into records of `record` bytes.
    pub(crate) fn hello(sni: Option<&str>, record: usize) -> Vec<u8> {
        let mut ext = Vec::new();
        if let Some(name) = sni {
            let n = name.as_bytes();
            let mut list = vec![0u8];
            list.extend((n.len() as u16).to_be_bytes());
            list.extend(n);
            let mut data = (list.len() as u16).to_be_bytes().to_vec();
            data.extend(list);
            ext.extend(0u16.to_be_bytes());
            ext.extend((data.len() as u16).to_be_bytes());
            ext.extend(data);
        }
        // An unrelated extension before nothing else (supported_versions).
        ext.extend([0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]);
        let mut body = vec![3, 3];
        body.extend([7u8; 32]);
        body.push(0);
        body.extend([0, 2, 0x13, 0x01]);
        body.extend([1, 0]);
        body.extend((ext.len() as u16).to_be_bytes());
        body.extend(ext);
        let mut message = vec![CLIENT_HELLO];
        message.extend(&(body.len() as u32).to_be_bytes()[1..]);
        message.extend(body);
        message
            .chunks(record)
            .flat_map(|chunk| {
                let mut r = vec![HANDSHAKE, 3, 1];
                r.extend((chunk.len() as u16).to_be_bytes());
                r.extend(chunk);
                r
            })
            .collect()
    }

    #[test]
    fn reads_the_server_name() {
        let bytes = hello(Some("daskgateway-abc"), 16384);
        assert_eq!(parse(&bytes), Hello::Complete(Some("daskgateway-abc".into())));
    }

    #[test]
    fn waits_for_the_whole_hello_even_across_records() {
        let bytes = hello(Some("daskgateway-abc"), 20);
        for cut in [0, 3, 10, bytes.len() - 1] {
            assert_eq!(parse(&bytes[..cut]), Hello::Incomplete, "cut at {cut}");
        }
        assert_eq!(parse(&bytes), Hello::Complete(Some("daskgateway-abc".into())));
    }

    #[test]
    fn tells_http_and_nameless_hellos_apart() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Hello::NotTls);
        assert_eq!(parse(&hello(None, 16384)), Hello::Complete(None));
    }
}
