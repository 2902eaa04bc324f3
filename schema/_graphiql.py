"""The GraphiQL page the GraphQL endpoint serves to a browser, with its example query."""

EXAMPLE_QUERY = """query {
  sources { id name kind }
  patientHistory(patient: {id: "DEMO-001"}, deadlineMs: 3000) {
    complete
    exams {
      studyInstanceUid studyDate studyTime modalities description accessionNumber
      patientName numberOfSeries numberOfInstances
      locations { source { id name } patientId retrieveUrl retrieveAeTitle }
    }
    sources { source { id } status latencyMs examCount error }
  }
}"""
"""The query the demo prints and GraphiQL opens with."""

GRAPHIQL_HTML = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>pacsfed · GraphiQL</title>
  <style>body { margin: 0; height: 100vh; } #graphiql { height: 100vh; }</style>
  <link rel="stylesheet" href="graphql/assets/graphiql.min.css">
</head>
<body>
  <div id="graphiql">Loading GraphiQL…</div>
  <script src="graphql/assets/react.production.min.js"></script>
  <script src="graphql/assets/react-dom.production.min.js"></script>
  <script src="graphql/assets/graphiql.min.js"></script>
  <script>
    // Every file comes from this server (web/static/graphiql): GraphiQL works without internet.
    const placeholder = "Bearer <paste token>";
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    const inner = GraphiQL.createFetcher({
      url: window.location.pathname,
      // Subscriptions over graphql-transport-ws; the headers below travel in connection_init.
      subscriptionUrl: scheme + "//" + window.location.host + window.location.pathname,
    });
    function fetcher(params, options) {
      const headers = Object.assign({}, options && options.headers);
      for (const name of Object.keys(headers)) {
        if (headers[name] === placeholder) delete headers[name];  // not pasted yet: send none
      }
      return inner(params, Object.assign({}, options, { headers }));
    }
    const defaultQuery = `__EXAMPLE_QUERY__`;
    // How to authenticate: replace the placeholder with a token (pacsfed demo prints one).
    const defaultHeaders = JSON.stringify({ Authorization: placeholder }, null, 2);
    ReactDOM.createRoot(document.getElementById("graphiql")).render(
      React.createElement(GraphiQL, {
        fetcher,
        defaultQuery,
        defaultHeaders,
        defaultEditorToolsVisibility: "headers",
      })
    );
  </script>
</body>
</html>
"""
GRAPHIQL_HTML = GRAPHIQL_HTML.replace("__EXAMPLE_QUERY__", EXAMPLE_QUERY)
