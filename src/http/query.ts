import { PortcullisError } from '../errors.ts'

/**
 * Query parameters of a request target, read once with URLSearchParams. A protocol parameter given
 * more than once is ambiguous (which one did the provider mean?) and is refused.
 */
export function readQuery(url: string): URLSearchParams {
  const q = url.indexOf('?')
  return new URLSearchParams(q === -1 ? '' : url.slice(q + 1))
}

export function single(params: URLSearchParams, name: string): string | undefined {
  const all = params.getAll(name)
  if (all.length > 1) throw new PortcullisError('REQUEST_REJECTED', `The parameter "${name}" was given more than once.`)
  return all[0]
}
