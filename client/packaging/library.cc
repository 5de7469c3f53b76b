// libfedge_client.so: the embeddable device library (fedge/client.h). Its code lives in
// client/grpc/ (fedge_client_grpc, linked whole into this shared library); this file only
// gives the library target a translation unit of its own.
#include "fedge/client.h"
