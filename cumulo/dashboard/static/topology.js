// The network topology: networks, routers and servers as a graph (cytoscape), redrawn
// when the page's stream says it changed; a click opens the item.
(function () {
  const box = document.getElementById("topology");
  const colors = { network: "#2563eb", external: "#6b7280", router: "#ea580c", server: "#16a34a" };
  const cy = cytoscape({
    container: box,
    style: [
      { selector: "node", style: { label: "data(label)", "background-color": (n) => colors[n.data("kind")] || "#000",
        shape: (n) => ({ router: "diamond", server: "round-rectangle" }[n.data("kind")] || "ellipse"),
        "font-size": 11, color: "#111" } },
      { selector: "edge", style: { width: 2, "line-color": "#9ca3af" } },
    ],
  });
  cy.on("tap", "node", (e) => { window.location.href = e.target.data("href"); });
  function draw(graph) {
    cy.elements().remove();
    cy.add([...graph.nodes, ...graph.edges]);
    // Force-directed: no edge runs through a node it does not join.
    const layout = { name: "cose", animate: false, padding: 30, idealEdgeLength: () => 90 };
    cy.layout({ ...layout, nodeRepulsion: () => 400000 }).run();
    box.dataset.nodes = String(graph.nodes.length);
    box.dataset.labels = graph.nodes.map((n) => n.data.label).join(",");
  }
  // The page's one stream sends the graph when it changes (first at once).
  const stream = new EventSource(box.dataset.source);
  stream.addEventListener("graph", (event) => draw(JSON.parse(event.data)));
  stream.addEventListener("session-ended", (event) => {
    stream.close();
    window.location.href = `/login?reason=${encodeURIComponent(event.data)}`;
  });
  window.addEventListener("pagehide", () => stream.close());
})();
