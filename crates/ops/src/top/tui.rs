//! The interactive view: the terminal in raw mode on its alternate screen, keys read as
//! they come, rows from a scraping thread (so a slow server never delays a key).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::prelude::CrosstermBackend;
use ratatui::Terminal;

use super::model::{self, Row};
use super::render::{draw, View};
use super::scrape::Scraper;

/// How often keys are looked at between refreshes.
const KEY_POLL: Duration = Duration::from_millis(50);

/// Puts the terminal back as it was, however the view ends (an error, a panic).
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = disable_raw_mode();
        let _ = execute!(std::io::stdout(), LeaveAlternateScreen);
    }
}

pub fn run(scraper: Scraper, interval: Duration) -> Result<()> {
    let rows = spawn_scraper(scraper, interval);
    enable_raw_mode().context("cannot put the terminal in raw mode")?;
    let _restore = Restore;
    execute!(std::io::stdout(), EnterAlternateScreen)?;
    let mut terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
    let mut view = View::default();
    loop {
        terminal.draw(|frame| draw(frame, &view))?;
        let height = terminal.size()?.height;
        if event::poll(KEY_POLL)? {
            if let Event::Key(key) = event::read()? {
                if key.kind != KeyEventKind::Press {
                    continue;
                }
                let page = View::page(height) as isize;
                match key.code {
                    KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                    KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                        return Ok(())
                    }
                    KeyCode::Char('s') => {
                        view.sort = view.sort.next();
                        view.sort.apply(&mut view.rows);
                    }
                    KeyCode::Char('r') => {
                        view.sort.reversed = !view.sort.reversed;
                        view.sort.apply(&mut view.rows);
                    }
                    KeyCode::Down | KeyCode::Char('j') => view.scroll_by(1, height),
                    KeyCode::Up | KeyCode::Char('k') => view.scroll_by(-1, height),
                    KeyCode::PageDown | KeyCode::Char(' ') => view.scroll_by(page, height),
                    KeyCode::PageUp => view.scroll_by(-page, height),
                    KeyCode::Home => view.scroll = 0,
                    KeyCode::End => view.scroll_by(isize::MAX, height),
                    _ => {}
                }
            }
        }
        while let Ok(rows) = rows.try_recv() {
            view.rows = rows;
            view.sort.apply(&mut view.rows);
            view.scroll_by(0, height);
        }
    }
}

/// Scrapes every interval on a thread of its own, sending each scrape's rows; it ends
/// when the view has gone (its next send fails).
fn spawn_scraper(scraper: Scraper, interval: Duration) -> mpsc::Receiver<Vec<Row>> {
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        let mut before = None;
        loop {
            let started = Instant::now();
            let now = scraper.scrape();
            if send.send(model::rows(before.as_ref(), &now)).is_err() {
                return;
            }
            before = Some(now);
            std::thread::sleep(interval.saturating_sub(started.elapsed()));
        }
    });
    receive
}
