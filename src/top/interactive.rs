//! The interactive `harrier top`: fetch, draw, wait for a key or the next `--interval`, again; keys change the
//! sort ([`on_key`]). A failed fetch after the first is shown under the last table, and the loop goes on.

use std::io::{self, Write};
use std::time::Instant;

use super::terminal::{stdout_size, Input, Terminal};
use super::{fetch, render, SeriesTable, SortBy, TopArgs, TopError};

/// What a key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing (a key without a meaning).
    Nothing,
    /// Fetch now and redraw (the sort may have changed).
    Refetch,
    /// Leave.
    Quit,
}

/// What the loop shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    pub sort: SortBy,
}

/// Ctrl-C and Ctrl-D as raw mode delivers them.
const CTRL_C: u8 = 0x03;
const CTRL_D: u8 = 0x04;
const ESC: u8 = 0x1b;

/// The meaning of one key: `s` `l` `b` `d` sort by series, lines, bytes, dropped (and refetch, even if the sort
/// is the same: a way to refresh at once); `q`, Ctrl-C or Ctrl-D quit; anything else is ignored.
pub fn on_key(view: &mut View, key: u8) -> Action {
    let sort = match key.to_ascii_lowercase() {
        b's' => SortBy::Series,
        b'l' => SortBy::Lines,
        b'b' => SortBy::Bytes,
        b'd' => SortBy::Dropped,
        b'q' | CTRL_C | CTRL_D => return Action::Quit,
        _ => return Action::Nothing,
    };
    view.sort = sort;
    Action::Refetch
}

/// The whole of `keys` as read at once: the first Quit wins, else a Refetch if any key asks for one. Escape
/// sequences (arrows, function keys: `ESC [ … final` or `ESC O final`) are skipped whole.
pub fn on_keys(view: &mut View, keys: &[u8]) -> Action {
    let mut action = Action::Nothing;
    let mut keys = keys.iter().copied();
    while let Some(key) = keys.next() {
        if key == ESC {
            if let Some(b'[' | b'O') = keys.next() {
                // Parameters, then one final byte in 0x40..=0x7e.
                for b in keys.by_ref() {
                    if (0x40..=0x7e).contains(&b) {
                        break;
                    }
                }
            }
            continue;
        }
        match on_key(view, key) {
            Action::Quit => return Action::Quit,
            Action::Refetch => action = Action::Refetch,
            Action::Nothing => {}
        }
    }
    action
}

/// Runs until a quit key, a stop signal or the end of stdin. The first fetch failing is the error returned.
pub(super) fn run(args: &TopArgs) -> Result<(), TopError> {
    let mut view = View { sort: args.sort };
    let mut table = fetch(&args.address, view.sort, args.top)?;
    let terminal = Terminal::open().map_err(TopError::Terminal)?;
    let mut error: Option<String> = None;
    loop {
        draw(&table, view, error.as_deref(), terminal.keys()).map_err(TopError::Terminal)?;
        let next = Instant::now() + args.interval;
        let refetch = loop {
            let left = next.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break true;
            }
            match terminal.wait(left).map_err(TopError::Terminal)? {
                Input::Keys(keys) => match on_keys(&mut view, &keys) {
                    Action::Quit => return Ok(()),
                    Action::Refetch => break true,
                    Action::Nothing => {}
                },
                Input::Timeout => {}
                Input::Eof | Input::Stop => return Ok(()),
            }
        };
        if refetch {
            match fetch(&args.address, view.sort, args.top) {
                Ok(t) => {
                    table = t;
                    error = None;
                }
                Err(e) => error = Some(e.to_string()),
            }
        }
    }
}

/// Clears the screen and draws the table, cut to the terminal's rows, with the keys (or the last error) below.
fn draw(table: &SeriesTable, view: View, error: Option<&str>, keys: bool) -> io::Result<()> {
    let (width, height) = stdout_size().unwrap_or((100, 40));
    let text = render(table, view.sort, width);
    let mut out = String::from("\x1b[H\x1b[2J");
    for line in text.lines().take(height.saturating_sub(2)) {
        out.push_str(line);
        out.push('\n');
    }
    let footer = match (error, keys) {
        (Some(e), _) => format!("error: {e}"),
        (None, true) => "s series · l lines · b bytes · d dropped · q quit".to_string(),
        (None, false) => "stdin is not a terminal: Ctrl-C quits".to_string(),
    };
    out.push_str(&footer.chars().take(width).collect::<String>());
    let mut stdout = io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    stdout.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_keys_change_the_sort_and_ask_for_a_refetch() {
        let mut view = View { sort: SortBy::Series };
        for (key, sort) in [
            (b'l', SortBy::Lines),
            (b'b', SortBy::Bytes),
            (b'D', SortBy::Dropped),
            (b's', SortBy::Series),
        ] {
            assert_eq!(on_key(&mut view, key), Action::Refetch, "{}", key as char);
            assert_eq!(view.sort, sort);
        }
        assert_eq!(on_key(&mut view, b's'), Action::Refetch, "the same sort refreshes");
    }

    #[test]
    fn q_ctrl_c_and_ctrl_d_quit_and_other_keys_do_nothing() {
        let mut view = View { sort: SortBy::Lines };
        for key in [b'q', b'Q', CTRL_C, CTRL_D] {
            assert_eq!(on_key(&mut view, key), Action::Quit);
        }
        for key in [b'x', b' ', 0x1b, b'[', b'A'] {
            assert_eq!(on_key(&mut view, key), Action::Nothing);
        }
        assert_eq!(view.sort, SortBy::Lines);
    }

    #[test]
    fn in_a_burst_of_keys_a_quit_wins_and_the_last_sort_is_kept() {
        let mut view = View { sort: SortBy::Series };
        assert_eq!(on_keys(&mut view, b"lbx"), Action::Refetch);
        assert_eq!(view.sort, SortBy::Bytes);
        assert_eq!(on_keys(&mut view, b"dq"), Action::Quit);
        // An arrow key's escape sequence means nothing (not even the `B` of the down arrow).
        assert_eq!(on_keys(&mut view, b"\x1b[A\x1b[B\x1bOB\x1b[1;5D"), Action::Nothing);
        assert_eq!(on_keys(&mut view, b"\x1b[Bl"), Action::Refetch);
        assert_eq!(view.sort, SortBy::Lines);
    }
}
