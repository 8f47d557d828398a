/* CRC-32C as the format uses it (FORMAT.md: crc32c, initial value 0 chained). */
#ifndef LNC_CRC32C_H
#define LNC_CRC32C_H
#include <stdint.h>
#include <stddef.h>

void lnc_crc32c_init(void);
int lnc_crc32c_accelerated(void);
uint32_t lnc_crc32c(uint32_t crc, const uint8_t *p, size_t n);
uint32_t lnc_crc32c_portable(uint32_t crc, const uint8_t *p, size_t n);

#endif
