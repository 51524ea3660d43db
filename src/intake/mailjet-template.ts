// The part of Mailjet's templating language Lacre speaks: `{{var:name}}` and
// `{{var:name:"default"}}` (also an unquoted default), filled from the message's Variables in
// Subject, TextPart and HTMLPart when TemplateLanguage is true, as Mailjet does. Anything else in
// `{{ }}` or `{% %}` (contact data, conditions, loops) is refused rather than sent literally, and
// a variable with neither a value nor a default fails the message at once: Mailjet would fail it
// while rendering, later. Values are inserted as given (no HTML escaping), as Mailjet does.

/** `code`: mj-0003 for a variable with no value, mj-0004 for a value of the wrong type, mj-0005 for syntax Lacre does not speak. */
export type TemplateResult = { ok: true; text: string } | { ok: false; code: 'mj-0003' | 'mj-0004' | 'mj-0005'; message: string; related: string };

const TAG = /\{\{\s*([\s\S]*?)\s*\}\}/g;
const VAR = /^var:([^\s:{}"]+)(?::(?:"((?:[^"\\]|\\.)*)"|([^"]*)))?$/;

export function renderTemplate(text: string, variables: Record<string, unknown>, field: string): TemplateResult {
  if (/\{%/.test(text)) {
    return { ok: false, code: 'mj-0005', message: `${field} uses {% %} statements (conditions or loops), which Lacre's templating does not support: only {{var:name}} and {{var:name:"default"}}.`, related: field };
  }
  let failure: TemplateResult | null = null;
  const out = text.replace(TAG, (whole, inner: string) => {
    if (failure) return whole;
    const match = VAR.exec(inner);
    if (!match) {
      failure = {
        ok: false,
        code: 'mj-0005',
        message: `${field} uses {{${inner}}}, which Lacre's templating does not support: only {{var:name}} and {{var:name:"default"}} (no contact data, no functions).`,
        related: field,
      };
      return whole;
    }
    const [, name, quotedDefault, bareDefault] = match;
    const has = Object.prototype.hasOwnProperty.call(variables, name);
    if (has) {
      const value = variables[name];
      if (typeof value === 'string') return value;
      if (typeof value === 'number' || typeof value === 'boolean') return String(value);
      failure = { ok: false, code: 'mj-0004', message: `Variables.${name} is ${value === null ? 'null' : Array.isArray(value) ? 'an array' : 'an object'}; {{var:${name}}} needs a string, number or boolean.`, related: `Variables.${name}` };
      return whole;
    }
    if (quotedDefault !== undefined) return quotedDefault.replace(/\\(.)/g, '$1');
    if (bareDefault !== undefined) return bareDefault;
    failure = { ok: false, code: 'mj-0003', message: `${field} uses {{var:${name}}} but Variables has no "${name}" and no default is given ({{var:${name}:"default"}}).`, related: `Variables.${name}` };
    return whole;
  });
  return (failure as TemplateResult | null) ?? { ok: true, text: out };
}
