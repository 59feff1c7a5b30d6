"""Microsoft Graph client: identity-platform tokens, paging, retries. No Dagster here."""
