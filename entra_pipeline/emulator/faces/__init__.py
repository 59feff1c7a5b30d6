"""The faces of the demo tenant, one per service it emulates: identity platform, Graph
collections, JSON batching, delta queries, Workday, and the control API tests drive it with."""
