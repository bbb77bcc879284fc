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

impl RevocationApi {
    /// `ListRevocations`: live records matching the filter.
    pub(crate) async fn list_revocations(
        &self,
        request: Request<pb::ListRevocationsRequest>,
    ) -> Result<pb::ListRevocationsResponse, ApiError> {
        let caller = self.caller(&request)?;
        Access::require(caller.as_ref(), &[Role::Read])?;
        let request = request.into_inner();
        let (filter, page_size, page_token) =
            page_request(request.filter, request.page_size, &request.page_token)?;
        let page = self
            .state
            .store
            .list(&filter, page_size, page_token, unix_now())
            .await?;
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
        let caller = self.caller(&request)?;
        Access::require(caller.as_ref(), &[Role::Read])?;
        let request = request.into_inner();
        let (filter, page_size, page_token) =
            page_request(request.filter, request.page_size, &request.page_token)?;
        let page = self
            .state
            .store
            .audit(&filter, page_size, page_token)
            .await?;
        Ok(pb::ListChangesResponse {
            changes: page.items.iter().map(pb::ChangeRecord::from).collect(),
            next_page_token: page.next.unwrap_or_default(),
        })
    }
}

/// Checks the common parts of a listing request: the filter, the page size
/// (0 for the default, capped at the largest) and the page token.
fn page_request(
    filter: Option<pb::RecordFilter>,
    page_size: u32,
    page_token: &str,
) -> Result<(RecordFilter, usize, Option<&str>), ApiError> {
    let filter = filter.unwrap_or_default();
    limits::text("filter.subject", &filter.subject, limits::MAX_ID_BYTES)?;
    limits::text("filter.actor", &filter.actor, limits::MAX_ID_BYTES)?;
    limits::issuer(&filter.issuer)?;
    limits::text("page_token", page_token, limits::MAX_CURSOR_BYTES)?;
    let filter = record_filter(filter)?;
    let page_size = match page_size as usize {
        0 => DEFAULT_PAGE_SIZE,
        size => size.min(MAX_PAGE_SIZE),
    };
    Ok((
        filter,
        page_size,
        (!page_token.is_empty()).then_some(page_token),
    ))
}
