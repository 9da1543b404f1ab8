//! What a sealed payload holds, and the member-list transfer for joiners.
//!
//! Design decisions:
//! - The first payload byte says what follows ([`PayloadKind`]): a SWIM
//!   message (foca's encoding), a request for the sender's member list, or
//!   one page of that list.
//! - SWIM alone teaches a joiner at most one feed of members (~60 per
//!   datagram) plus whoever happens to probe it, so in a cluster larger
//!   than a feed its view would fill in over minutes. A node that joins (or
//!   rejoins) therefore asks one random member for its whole list, which
//!   answers with pages of up to [`MAX_PAGE`] bytes (~63 members each: 16
//!   datagrams for 1,000 members) and serves at most one request per probe
//!   period. Pages are applied without re-broadcasting: the cluster already
//!   knows what they say, and SWIM's incarnation rules drop stale entries.

use bytes::Buf;
use foca::{Codec, Member, PostcardCodec};

use super::datagram::MAX_PAYLOAD;
use super::MemberId;

/// What a payload holds (its first byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    Swim = 0,
    SyncRequest = 1,
    SyncPage = 2,
}

impl PayloadKind {
    pub fn of(payload: &[u8]) -> Option<(PayloadKind, &[u8])> {
        let (&kind, rest) = payload.split_first()?;
        let kind = match kind {
            0 => PayloadKind::Swim,
            1 => PayloadKind::SyncRequest,
            2 => PayloadKind::SyncPage,
            _ => return None,
        };
        Some((kind, rest))
    }

    /// `body` behind this kind's byte.
    pub fn wrap(self, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + body.len());
        out.push(self as u8);
        out.extend_from_slice(body);
        out
    }
}

/// Largest SWIM message: the payload less the kind byte.
pub const MAX_SWIM_MESSAGE: usize = MAX_PAYLOAD - 1;
/// Largest sync page payload (kind byte and count included).
pub const MAX_PAGE: usize = MAX_PAYLOAD;

/// A page that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed member-list page")]
pub struct BadPage;

/// `members` as sync page payloads: kind, u16 BE count, encoded members.
pub fn encode_pages<'a>(members: impl Iterator<Item = &'a Member<MemberId>>) -> Vec<Vec<u8>> {
    let mut pages = Vec::new();
    let mut page = new_page();
    let mut encoded = Vec::new();
    for m in members {
        encoded.clear();
        if PostcardCodec.encode_member(m, &mut encoded).is_err() {
            continue;
        }
        if page.len() + encoded.len() > MAX_PAGE {
            pages.push(std::mem::replace(&mut page, new_page()));
        }
        page.extend_from_slice(&encoded);
        let count = u16::from_be_bytes([page[1], page[2]]) + 1;
        page[1..3].copy_from_slice(&count.to_be_bytes());
    }
    if page.len() > 3 {
        pages.push(page);
    }
    pages
}

fn new_page() -> Vec<u8> {
    let mut page = Vec::with_capacity(MAX_PAGE);
    page.extend_from_slice(&[PayloadKind::SyncPage as u8, 0, 0]);
    page
}

/// The members of a page body (after the kind byte).
pub fn decode_page(mut body: &[u8]) -> Result<Vec<Member<MemberId>>, BadPage> {
    if body.len() < 2 {
        return Err(BadPage);
    }
    let count = usize::from(body.get_u16());
    // Every member takes more than one byte: a count beyond that is a lie.
    if count > body.len() {
        return Err(BadPage);
    }
    let mut members = Vec::with_capacity(count);
    for _ in 0..count {
        members.push(
            PostcardCodec
                .decode_member(&mut body)
                .map_err(|_| BadPage)?,
        );
    }
    if body.has_remaining() {
        return Err(BadPage);
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thousand_members_travel_in_full_pages_and_come_back_whole() {
        let members: Vec<Member<MemberId>> = (0..1000u32)
            .map(|i| {
                let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
                Member::alive(MemberId::starting_now((ip, 7468).into(), 7469))
            })
            .collect();
        let pages = encode_pages(members.iter());
        assert!(pages.len() <= 20, "{} pages", pages.len());
        let mut back = Vec::new();
        for p in &pages {
            assert!(p.len() <= MAX_PAGE);
            let (kind, body) = PayloadKind::of(p).unwrap();
            assert_eq!(kind, PayloadKind::SyncPage);
            back.extend(decode_page(body).unwrap());
        }
        assert_eq!(back, members);
        assert!(encode_pages(std::iter::empty()).is_empty());
    }

    #[test]
    fn malformed_pages_and_kinds_are_refused() {
        assert_eq!(PayloadKind::of(&[]), None);
        assert_eq!(PayloadKind::of(&[9, 1]), None);
        assert_eq!(decode_page(&[0]), Err(BadPage));
        assert_eq!(decode_page(&[0xff, 0xff, 1, 2]), Err(BadPage));
        let m = Member::alive(MemberId::seed("10.0.0.1:7468".parse().unwrap(), 7469));
        let page = encode_pages(std::iter::once(&m)).remove(0);
        assert_eq!(decode_page(&page[1..]), Ok(vec![m]));
        let mut trailing = page[1..].to_vec();
        trailing.push(0);
        assert_eq!(decode_page(&trailing), Err(BadPage));
        assert_eq!(decode_page(&page[1..page.len() - 1]), Err(BadPage));
    }
}
