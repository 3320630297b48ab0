import type { ParsedConfig } from './schema.ts'

type DeepReadonly<T> = T extends (infer U)[]
  ? readonly DeepReadonly<U>[]
  : T extends object
    ? { readonly [K in keyof T]: DeepReadonly<T[K]> }
    : T

/** The validated, frozen configuration: the only thing other layers import from `config/`. */
export type Config = DeepReadonly<ParsedConfig>
export type RouteConfig = Config['routes'][number]

/** One problem with a config file, with the path of the key it concerns (`session.secrets[0]`). */
export interface ConfigIssue {
  readonly path: string
  readonly message: string
}
