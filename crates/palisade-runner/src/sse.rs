//! A bounded decoder for `text/event-stream` bodies.
//!
//! Both model APIs stream server-sent events: Anthropic names each event
//! (`event: content_block_delta`), OpenAI sends only `data:` lines ending with
//! `data: [DONE]`. This decoder turns body chunks into events and refuses to buffer
//! more than a set size, so a broken or hostile stream cannot grow memory without end.
//! Hand-written because it is forty lines and the crates for it bring their own HTTP
//! client.

/// One event: its name (if any) and its `data:` lines joined with `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    pub(crate) event: Option<String>,
    pub(crate) data: String,
}

#[derive(Debug)]
pub(crate) struct SseDecoder {
    buffer: Vec<u8>,
    event: Option<String>,
    data: String,
    has_data: bool,
    max_event_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("a streamed event is larger than {0} bytes")]
pub(crate) struct EventTooLarge(pub(crate) usize);

impl SseDecoder {
    pub(crate) fn new(max_event_bytes: usize) -> SseDecoder {
        SseDecoder {
            buffer: Vec::new(),
            event: None,
            data: String::new(),
            has_data: false,
            max_event_bytes,
        }
    }

    /// Feeds a chunk; returns the events it completed.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, EventTooLarge> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(newline) = self.buffer.iter().position(|&byte| byte == b'\n') {
            let mut line: Vec<u8> = self.buffer.drain(..=newline).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line);
            if let Some(event) = self.line(&line) {
                events.push(event);
            }
            if self.data.len() > self.max_event_bytes {
                return Err(EventTooLarge(self.max_event_bytes));
            }
        }
        if self.buffer.len() > self.max_event_bytes {
            return Err(EventTooLarge(self.max_event_bytes));
        }
        Ok(events)
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let event = self.event.take();
            if !self.has_data {
                return None;
            }
            self.has_data = false;
            return Some(SseEvent {
                event,
                data: std::mem::take(&mut self.data),
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_across_chunks() {
        let mut decoder = SseDecoder::new(1024);
        assert!(decoder.push(b"event: ping\nda").unwrap().is_empty());
        let events = decoder
            .push(b"ta: {\"a\":1}\r\n\r\n: comment\ndata: [DONE]\n\n")
            .unwrap();
        assert_eq!(
            events,
            vec![
                SseEvent {
                    event: Some("ping".into()),
                    data: "{\"a\":1}".into()
                },
                SseEvent {
                    event: None,
                    data: "[DONE]".into()
                },
            ]
        );
    }

    #[test]
    fn refuses_endless_event() {
        let mut decoder = SseDecoder::new(16);
        assert!(decoder.push(&[b'x'; 64]).is_err());
        let mut decoder = SseDecoder::new(16);
        assert!(decoder
            .push(b"data: 0123456789\ndata: 0123456789\n")
            .is_err());
    }
}
