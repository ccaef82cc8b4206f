//! The table as plain text, for when standard output is not a terminal (a pipe, a file,
//! a script) and for `--once`.

use std::fmt::Write;

use super::model::{cells, column_widths, COLUMNS};
use super::render::View;

/// The view as aligned text: the title, the heading, one line per row.
pub fn table(view: &View) -> String {
    let texts: Vec<Vec<String>> = view.rows.iter().map(cells).collect();
    let widths = column_widths(&texts);
    let mut out = String::new();
    let up = view
        .rows
        .iter()
        .filter(|r| r.state == super::model::State::Up)
        .count();
    let _ = writeln!(out, "herdctl top: {up}/{} servers up", view.rows.len());
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            let pad = widths[i].saturating_sub(cell.chars().count());
            text.push_str(cell);
            text.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut out, &mut COLUMNS.iter().map(|(h, _)| *h));
    for row in &texts {
        line(&mut out, &mut row.iter().map(String::as_str));
    }
    out
}
