//! `ListRevocations` and `ListChanges`: the live records and the audit
//! trail, a page at a time, for keys holding `read`.

use tonic::Request;

use super::RevocationApi;
use crate::auth::{Access, Role};
use crate::pb;
use crate::server::convert::record_filter;
use crate::server::error::ApiError;
use crate::server::limits::{self, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use crate::store::RecordFilter;
use crate::time::unix_now;

/// The parts every listing request has, as sent.
struct PageRequest {
    filter: Option<pb::RecordFilter>,
    page_size: u32,
    page_token: String,
}

/// A listing request, checked: what to list and from where.
#[derive(Debug)]
struct Listing {
    filter: RecordFilter,
    /// Most items of the page: the size asked for, capped, or the default
    /// when none (0) was asked for.
    page_size: usize,
    /// Where the previous page ended; `None` for the first page.
    page_token: Option<String>,
}

impl RevocationApi {
    /// `ListRevocations`: live records matching the filter.
    pub(crate) async fn list_revocations(
        &self,
        request: Request<pb::ListRevocationsRequest>,
    ) -> Result<pb::ListRevocationsResponse, ApiError> {
        let listing = self.listing(request)?;
        let page = self.state.store.list(
            &listing.filter,
            listing.page_size,
            listing.page_token.as_deref(),
            unix_now(),
        );
        let page = page.await?;
        Ok(pb::ListRevocationsResponse {
            records: page.items.iter().map(pb::RevocationRecord::from).collect(),
            next_page_token: page.next.unwrap_or_default(),
        })
    }

    /// `ListChanges`: the change log's entries matching the filter, oldest
    /// first, as far back as the log is retained.
    pub(crate) async fn list_changes(
        &self,
        request: Request<pb::ListChangesRequest>,
    ) -> Result<pb::ListChangesResponse, ApiError> {
        let listing = self.listing(request)?;
        let page = self.state.store.audit(
            &listing.filter,
            listing.page_size,
            listing.page_token.as_deref(),
        );
        let page = page.await?;
        Ok(pb::ListChangesResponse {
            changes: page.items.iter().map(pb::ChangeRecord::from).collect(),
            next_page_token: page.next.unwrap_or_default(),
        })
    }

    /// Authorises a listing (role `read`) and checks its request.
    fn listing<R: Into<PageRequest>>(&self, request: Request<R>) -> Result<Listing, ApiError> {
        let caller = self.caller(&request)?;
        Access::require(caller.as_ref(), &[Role::Read])?;
        Listing::try_from(request.into_inner().into())
    }
}

impl TryFrom<PageRequest> for Listing {
    type Error = ApiError;

    /// Checks the filter's text fields and the page token, then the
    /// filter's times and kind.
    fn try_from(request: PageRequest) -> Result<Self, ApiError> {
        let filter = request.filter.unwrap_or_default();
        limits::text("filter.subject", &filter.subject, limits::MAX_ID_BYTES)?;
        limits::text("filter.actor", &filter.actor, limits::MAX_ID_BYTES)?;
        limits::issuer(&filter.issuer)?;
        let page_token = request.page_token;
        limits::text("page_token", &page_token, limits::MAX_CURSOR_BYTES)?;
        Ok(Listing {
            filter: record_filter(filter)?,
            page_size: match request.page_size as usize {
                0 => DEFAULT_PAGE_SIZE,
                size => size.min(MAX_PAGE_SIZE),
            },
            page_token: (!page_token.is_empty()).then_some(page_token),
        })
    }
}

/// `From` each listing request for [`PageRequest`]: they share its fields.
macro_rules! page_request_from {
    ($($request:ty),*) => {$(
        impl From<$request> for PageRequest {
            fn from(request: $request) -> Self {
                PageRequest {
                    filter: request.filter,
                    page_size: request.page_size,
                    page_token: request.page_token,
                }
            }
        }
    )*};
}

page_request_from!(pb::ListRevocationsRequest, pb::ListChangesRequest);

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::super::testing::{self, api, refusal, request, token};
    use super::*;

    fn page(page_size: u32, page_token: &str) -> Result<Listing, ApiError> {
        Listing::try_from(PageRequest {
            filter: None,
            page_size,
            page_token: page_token.into(),
        })
    }

    #[test]
    fn page_sizes_default_and_are_capped() {
        let size = |asked| page(asked, "").unwrap().page_size;
        assert_eq!(size(0), DEFAULT_PAGE_SIZE);
        assert_eq!(size(7), 7);
        assert_eq!(size(50_000), MAX_PAGE_SIZE);
        assert_eq!(page(0, "").unwrap().page_token, None);
        assert_eq!(page(0, "p").unwrap().page_token.as_deref(), Some("p"));
        let long = "x".repeat(limits::MAX_CURSOR_BYTES + 1);
        assert!(page(0, &long).is_err());
    }

    #[tokio::test]
    async fn listings_need_the_read_role() {
        let api = api().await;
        for key in [testing::REVOKE, testing::SUBSCRIBE] {
            let list = api.list_revocations(request(Default::default(), key)).await;
            assert_eq!(refusal(list).0, Code::PermissionDenied);
            let changes = api.list_changes(request(Default::default(), key)).await;
            assert_eq!(refusal(changes).0, Code::PermissionDenied);
        }
        let keyless = api.list_revocations(request(Default::default(), testing::KEYLESS));
        assert_eq!(refusal(keyless.await).0, Code::Unauthenticated);
    }

    #[tokio::test]
    async fn records_and_changes_show_who_revoked() {
        let api = api().await;
        let revoke = pb::RevokeRequest {
            token: token("alice", "a-1"),
            ..Default::default()
        };
        api.revoke(request(revoke, testing::REVOKE)).await.unwrap();
        let list = api.list_revocations(request(Default::default(), testing::READ));
        let records = list.await.unwrap().records;
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].actor, "auth-server");
        let changes = api.list_changes(request(Default::default(), testing::READ));
        let changes = changes.await.unwrap().changes;
        assert_eq!(changes.len(), 1);
        assert!(!changes[0].cursor.is_empty());
    }

    #[tokio::test]
    async fn a_page_token_not_handed_out_is_an_invalid_argument() {
        let api = api().await;
        let forged = pb::ListRevocationsRequest {
            page_token: "forged".into(),
            ..Default::default()
        };
        let (code, message) = refusal(api.list_revocations(request(forged, testing::READ)).await);
        assert_eq!(code, Code::InvalidArgument);
        assert_eq!(message, "the page token is not one this server handed out");
    }
}
