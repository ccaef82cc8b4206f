//! The live view as ratatui widgets: a title line (the herd at a glance, the sort, the
//! keys), then the table, scrolled.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Cell, Paragraph, Row as TableRow, Table};
use ratatui::Frame;

use super::model::{cells, column_widths, Row, Sort, State, COLUMNS};

/// What the screen shows: rows already sorted, the sort, and the first row shown.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub rows: Vec<Row>,
    pub sort: Sort,
    pub scroll: usize,
}

impl View {
    /// Rows that fit under the title and the heading in a screen `height` tall.
    pub fn page(height: u16) -> usize {
        usize::from(height.saturating_sub(2)).max(1)
    }

    /// Moves the first row shown by `by` (negative: up), within the rows.
    pub fn scroll_by(&mut self, by: isize, height: u16) {
        let last = self.rows.len().saturating_sub(View::page(height));
        self.scroll = self.scroll.saturating_add_signed(by).min(last);
    }

    /// The title line: servers up of all, sort column and direction, keys.
    pub fn title(&self) -> String {
        let up = self.rows.iter().filter(|r| r.state == State::Up).count();
        let (column, _) = COLUMNS[self.sort.column];
        let reversed = if self.sort.reversed { " reversed" } else { "" };
        format!(
            "herdctl top: {up}/{} servers up  sort: {column}{reversed}  \
             (s: next column, r: reverse, arrows/PgUp/PgDn: scroll, q: quit)",
            self.rows.len()
        )
    }
}

/// Draws `view` on the whole frame.
pub fn draw(frame: &mut Frame, view: &View) {
    let [title, table] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(frame.area());
    frame.render_widget(
        Paragraph::new(Line::from(view.title())).style(Style::new().add_modifier(Modifier::BOLD)),
        title,
    );
    draw_table(frame, view, table);
}

fn draw_table(frame: &mut Frame, view: &View, area: Rect) {
    let texts: Vec<Vec<String>> = view.rows.iter().map(cells).collect();
    // Each column as wide as its widest cell or heading.
    let widths: Vec<Constraint> = column_widths(&texts)
        .into_iter()
        .map(|width| Constraint::Length(width as u16))
        .collect();
    let header = TableRow::new(COLUMNS.iter().enumerate().map(|(i, (heading, _))| {
        let style = Style::new().add_modifier(Modifier::BOLD);
        let style = if i == view.sort.column {
            style.add_modifier(Modifier::REVERSED)
        } else {
            style
        };
        Cell::from(*heading).style(style)
    }));
    let rows = view
        .rows
        .iter()
        .zip(texts)
        .skip(view.scroll)
        .map(|(row, text)| {
            let color = match row.state {
                State::Up if !row.missing.is_empty() || row.store_ok == Some(false) => {
                    Color::Yellow
                }
                State::Up => Color::Reset,
                State::Paused => Color::Yellow,
                State::Down | State::Unreachable => Color::Red,
            };
            TableRow::new(text).style(Style::new().fg(color))
        });
    frame.render_widget(Table::new(rows, widths).header(header), area);
}
