"""HTTP plumbing and pages: request ids, authentication middleware, CORS, uvicorn options, GraphiQL, the share page, the physician's page."""
