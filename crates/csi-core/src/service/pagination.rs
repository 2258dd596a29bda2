//! ListVolumes/ListSnapshots pagination with opaque offset tokens.

use crate::error::{Error, Result};

/// Returns the page of `items` starting at `starting_token` (empty: the beginning) with at
/// most `max_entries` items (0: all), and the token of the next page (empty: no more).
/// A token that is not one this function issued, or points past the end, is `Aborted`.
pub fn paginate<T>(
    mut items: Vec<T>,
    max_entries: i32,
    starting_token: &str,
) -> Result<(Vec<T>, String)> {
    if max_entries < 0 {
        return Err(Error::invalid("max_entries", "must not be negative"));
    }
    let start = if starting_token.is_empty() {
        0
    } else {
        starting_token
            .parse::<usize>()
            .ok()
            .filter(|&s| s <= items.len())
            .ok_or_else(|| {
                Error::Aborted(format!(
                    "starting_token {starting_token:?} is not valid (stale or foreign)"
                ))
            })?
    };
    let end = match max_entries {
        0 => items.len(),
        n => items.len().min(start + n as usize),
    };
    let next = if end < items.len() {
        end.to_string()
    } else {
        String::new()
    };
    items.truncate(end);
    Ok((items.split_off(start), next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use proptest::prelude::*;

    #[test]
    fn bad_tokens_are_aborted() {
        assert_eq!(
            paginate(vec![1, 2], 1, "x").unwrap_err().code(),
            ErrorCode::Aborted
        );
        assert_eq!(
            paginate(vec![1, 2], 1, "3").unwrap_err().code(),
            ErrorCode::Aborted
        );
        assert_eq!(
            paginate(vec![1, 2], -1, "").unwrap_err().code(),
            ErrorCode::InvalidArgument
        );
    }

    proptest! {
        #[test]
        fn walking_the_pages_yields_every_item_once(n in 0usize..50, page in 0i32..7) {
            let items: Vec<usize> = (0..n).collect();
            let (mut seen, mut token) = (Vec::new(), String::new());
            loop {
                let (got, next) = paginate(items.clone(), page, &token).unwrap();
                prop_assert!(page == 0 || got.len() <= page as usize);
                seen.extend(got);
                if next.is_empty() { break; }
                token = next;
            }
            prop_assert_eq!(seen, items);
        }
    }
}
