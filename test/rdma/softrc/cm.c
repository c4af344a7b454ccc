/* softrc (TEST FIXTURE, never shipped): rdma_cm over a side TCP socket (in progress). */
#include <rdma/rdma_cma.h>
const char *rdma_event_str(enum rdma_cm_event_type event) { (void)event; return "UNKNOWN"; }
