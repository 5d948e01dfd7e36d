//! A report computed in parts: each part holds the rows of some of the stores, sorted by store id (as
//! [`Report::write_csv_part`](super::Report::write_csv_part) writes them, without the header); merging
//! the parts gives the CSV the whole report would have, byte for byte.
//!
//! The parts are our own output, so a row is `<id>,<figures>\n` where only the id can be CSV-quoted (it
//! may hold a comma, a quote or a line break; the figures never do).

use std::fmt;

/// A part that is not a list of report rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartError {
    pub part: usize,
    pub offset: usize,
    pub problem: &'static str,
}

impl fmt::Display for PartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "report part {} at byte {}: {}", self.part, self.offset, self.problem)
    }
}

impl std::error::Error for PartError {}

/// One row of a part: its store id as written (quotes included) and the whole line.
struct Row<'a> {
    id: std::borrow::Cow<'a, [u8]>,
    line: &'a [u8],
}

/// The report's CSV: `header`, a line end, then the rows of every part in store-id order (byte order of
/// the ids, as the whole report sorts them). Each store is in one part only.
pub fn merge_parts(header: &str, parts: &[&[u8]]) -> Result<Vec<u8>, PartError> {
    let mut rows = Vec::new();
    for (part_no, part) in parts.iter().enumerate() {
        split_rows(part_no, part, &mut rows)?;
    }
    rows.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    let mut out = Vec::with_capacity(header.len() + 1 + parts.iter().map(|p| p.len()).sum::<usize>());
    out.extend_from_slice(header.as_bytes());
    out.push(b'\n');
    for row in rows {
        out.extend_from_slice(row.line);
    }
    Ok(out)
}

fn split_rows<'a>(part_no: usize, part: &'a [u8], rows: &mut Vec<Row<'a>>) -> Result<(), PartError> {
    let error = |offset, problem| PartError { part: part_no, offset, problem };
    let mut at = 0;
    while at < part.len() {
        let start = at;
        let id = if part[at] == b'"' {
            // A quoted id: up to the quote that is not doubled; "" stands for one quote.
            let mut id = Vec::new();
            at += 1;
            loop {
                match part.get(at) {
                    None => return Err(error(start, "a quoted store id does not end")),
                    Some(b'"') if part.get(at + 1) == Some(&b'"') => {
                        id.push(b'"');
                        at += 2;
                    }
                    Some(b'"') => {
                        at += 1;
                        break;
                    }
                    Some(&byte) => {
                        id.push(byte);
                        at += 1;
                    }
                }
            }
            std::borrow::Cow::Owned(id)
        } else {
            let end =
                memchr::memchr(b',', &part[at..]).map(|n| at + n).ok_or_else(|| error(start, "a row has no comma"))?;
            let id = &part[at..end];
            at = end;
            std::borrow::Cow::Borrowed(id)
        };
        if part.get(at) != Some(&b',') {
            return Err(error(at, "a store id is not followed by a comma"));
        }
        let end =
            memchr::memchr(b'\n', &part[at..]).map(|n| at + n + 1).ok_or_else(|| error(start, "a row does not end"))?;
        rows.push(Row { id, line: &part[start..end] });
        at = end;
    }
    Ok(())
}
