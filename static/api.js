// The API reference page: renders /openapi.json as text nodes (no HTML from the document).
const main = document.getElementById("operations");

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function resolve(document, schema) {
  const ref = schema && schema.$ref;
  return ref ? document.components.schemas[ref.split("/").pop()] : schema;
}

function operation(document, path, method, details, shared) {
  const section = element("section");
  const title = element("h2");
  title.append(element("span", method.toUpperCase(), `method ${method}`), element("code", path));
  section.append(title, element("p", details.summary || ""));
  const parameters = [...(shared || []), ...(details.parameters || [])];
  if (parameters.length) {
    const list = element("dl");
    for (const parameter of parameters) {
      list.append(element("dt", `${parameter.name} (${parameter.in})`));
      list.append(element("dd", JSON.stringify(parameter.schema || {})));
    }
    section.append(element("h3", "Parameters"), list);
  }
  const body = details.requestBody;
  if (body) {
    section.append(element("h3", `Body: ${Object.keys(body.content).join(" or ")}`));
    const schema = resolve(document, Object.values(body.content)[0].schema);
    section.append(element("pre", JSON.stringify(schema, null, 2)));
  }
  const responses = element("dl");
  for (const [status, response] of Object.entries(details.responses || {})) {
    responses.append(element("dt", status), element("dd", response.description || ""));
  }
  section.append(element("h3", "Responses"), responses);
  return section;
}

async function render() {
  const response = await fetch("/openapi.json");
  const document = await response.json();
  main.replaceChildren();
  for (const [path, item] of Object.entries(document.paths)) {
    for (const method of ["get", "post"]) {
      if (item[method]) main.append(operation(document, path, method, item[method], item.parameters));
    }
  }
  main.append(element("h2", "Schemas"));
  main.append(element("pre", JSON.stringify(document.components.schemas, null, 2)));
}

render().catch((error) => {
  main.replaceChildren(element("p", `The API document could not be loaded: ${error}`));
});
