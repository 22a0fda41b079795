//! The sentence splitter (RFC §12.2, streaming AI → TTS): buffers streamed
//! text and hands out whole sentences, so speech starts at the first
//! sentence instead of after the whole reply.
//!
//! A sentence ends at `.`, `!` or `?` (or a line break) followed by white
//! space. Pieces shorter than `min_chunk_chars` are joined to the next one,
//! so the TTS never gets a two-letter fragment; whatever is left when the
//! stream ends is the last sentence.

/// Default shortest piece handed to TTS, in characters.
pub const DEFAULT_MIN_CHUNK_CHARS: usize = 12;

/// Splits streamed text at sentence boundaries.
#[derive(Debug, Clone)]
pub struct SentenceSplitter {
    buffer: String,
    min_chunk_chars: usize,
}

impl Default for SentenceSplitter {
    fn default() -> Self {
        Self::new(DEFAULT_MIN_CHUNK_CHARS)
    }
}

impl SentenceSplitter {
    /// A splitter that never hands out less than `min_chunk_chars`
    /// characters (except for the final rest).
    pub fn new(min_chunk_chars: usize) -> Self {
        Self {
            buffer: String::new(),
            min_chunk_chars,
        }
    }

    /// Adds streamed text; returns the sentences it completed, in order.
    pub fn push(&mut self, text: &str) -> Vec<String> {
        self.buffer.push_str(text);
        let mut out = Vec::new();
        while let Some(end) = self.boundary() {
            let rest = self.buffer.split_off(end);
            let sentence = std::mem::replace(&mut self.buffer, rest);
            let sentence = sentence.trim();
            if !sentence.is_empty() {
                out.push(sentence.to_owned());
            }
            let trimmed = self.buffer.trim_start().len();
            let cut = self.buffer.len() - trimmed;
            self.buffer.drain(..cut);
        }
        out
    }

    /// The stream ended: the rest, if any.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.buffer);
        let rest = rest.trim();
        (!rest.is_empty()).then(|| rest.to_owned())
    }

    /// Byte offset just past the first boundary at which the text before it
    /// is long enough, when there is one followed by white space.
    fn boundary(&self) -> Option<usize> {
        let mut chars = self.buffer.char_indices().peekable();
        let mut count = 0usize;
        while let Some((i, c)) = chars.next() {
            count += 1;
            let ends = matches!(c, '.' | '!' | '?' | '\n');
            if !ends || count < self.min_chunk_chars {
                continue;
            }
            match chars.peek() {
                Some((_, next)) if next.is_whitespace() => return Some(i + c.len_utf8()),
                // A line break ends a sentence by itself.
                _ if c == '\n' => return Some(i + 1),
                _ => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streamed_reply_yields_its_first_sentence_before_the_end() {
        let mut s = SentenceSplitter::new(5);
        assert!(s.push("Hello the").is_empty());
        assert!(
            s.push("re.").is_empty(),
            "no white space after the stop yet"
        );
        assert_eq!(s.push(" How are"), vec!["Hello there."]);
        assert_eq!(s.push(" you? I am fine"), vec!["How are you?"]);
        assert_eq!(s.finish().as_deref(), Some("I am fine"));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn short_pieces_join_the_next_and_decimals_do_not_split() {
        let mut s = SentenceSplitter::new(12);
        assert_eq!(
            s.push("Ok. It costs 3.50 today. "),
            vec!["Ok. It costs 3.50 today."]
        );
        assert_eq!(s.push("Bye!"), Vec::<String>::new());
        assert_eq!(s.finish().as_deref(), Some("Bye!"));
    }

    #[test]
    fn multibyte_text_splits_on_char_boundaries() {
        let mut s = SentenceSplitter::new(3);
        assert_eq!(s.push("Ça va très bien. Été… "), vec!["Ça va très bien."]);
        assert_eq!(s.finish().as_deref(), Some("Été…"));
    }
}
